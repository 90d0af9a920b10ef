//! The B2BUA: each call is two dialogs, the A-leg towards the caller and the B-leg towards
//! the callee, with the transactions that bind them and the call's own timers.
//!
//! The call logic is split by SIP concern: [`invite`] (a new call and the answers to its
//! INVITE, CANCEL), [`in_dialog`] (requests relayed between the legs, their answers, ACK),
//! [`teardown`] (BYE, ending and removing a call, the call timers). It talks to the node
//! only through a [`Sink`]; the node decides what reaches it (authentication, routing,
//! overload) and closes each step into a batch.

mod call;
mod calls;
mod in_dialog;
mod invite;
mod recovery;
mod takeover;
mod teardown;
mod tombstone;

pub(crate) use tombstone::Tombstone;
mod wire;

pub use call::{Call, CallState, CallTimer, Pending2xx, Relay, Side};
pub(crate) use wire::{cseq_of, max_forwards, not_saved};

use crate::message::{Method, Request, Response, SipMessage};
use crate::sink::Sink;
use crate::transaction::{Peer, TxKey};
use crate::UnixMillis;
use calls::{Calls, Purpose};
pub use recovery::{owner_incarnation_of, owner_of};

/// Every call of the node and the logic that runs them.
#[derive(Debug, Default)]
pub(crate) struct B2bua {
    calls: Calls,
}

impl B2bua {
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(crate) fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.iter()
    }

    pub(crate) fn has_orphans(&self) -> bool {
        self.calls.has_orphans()
    }

    /// Nothing a draining node must stay for: no 2xx waits for its ACK, no ending call
    /// for the answers to its BYEs. (Confirmed calls are in the store.)
    pub(crate) fn is_idle(&self) -> bool {
        !self.calls.has_orphans() && self.calls.iter().all(|c| c.is_settled())
    }

    pub(crate) fn poll_timeout(&self) -> Option<UnixMillis> {
        self.calls.next_deadline()
    }

    /// The call whose timer is due first at `now`; the node fires them one by one
    /// ([`B2bua::fire_timer`]), each in its own batch.
    pub(crate) fn first_due(&self, now: UnixMillis) -> Option<String> {
        self.calls.first_due(now)
    }

    /// Retransmits the 2xx of ended calls that still wait for their ACK.
    pub(crate) fn retransmit_orphans(&mut self, s: &mut Sink, now: UnixMillis) {
        for (p, peer) in self.calls.due_orphans(now, &s.cfg.timers) {
            s.resend_stateless(&SipMessage::Response(p.response), peer);
        }
    }

    /// A batch that wrote call `id` left at `now`: the 2xx it may have carried is
    /// retransmitted counting from then (§13.3.1.4), not from when it was made.
    pub(crate) fn departed(&mut self, s: &Sink, id: &str, now: UnixMillis) {
        let Some(p) = self.calls.get_mut(id).and_then(|c| c.pending_2xx.as_mut()) else {
            return;
        };
        p.last_sent_at = p.last_sent_at.max(now);
        self.calls.reschedule(id, &s.cfg.timers);
    }

    /// A 2xx was withdrawn (its write failed): if its call ended meanwhile and left it to
    /// retransmit as an orphan, it stops.
    pub(crate) fn forget_orphan(&mut self, ok: &Response) {
        let h = &ok.headers;
        if let (Some(call_id), Some(cseq)) = (
            h.get("Call-ID"),
            h.get("CSeq").and_then(crate::message::CSeq::parse),
        ) {
            self.calls.ack_orphan(call_id, cseq.seq);
        }
    }

    /// The call ringing through the caller's INVITE server transaction `key`.
    pub(crate) fn call_of_server_invite(&self, key: &TxKey) -> Option<String> {
        self.calls.by_server_invite(key)
    }

    /// Whether the leg with Call-ID `call_id` is of a call that waits for its read-back
    /// after a lost compare-and-swap: its transactions' retransmissions stay back (another
    /// node may run the call now; cluster-chaos seed 168).
    pub(crate) fn is_contested_leg(&self, call_id: &str) -> bool {
        self.calls.is_contested_leg(call_id)
    }

    /// Transaction `key` is over: nothing leads to its call through it any more. The
    /// caller's INVITE transaction of a call that failed ends the call (see
    /// [`B2bua::wind_down`]).
    pub(crate) fn transaction_ended(&mut self, s: &mut Sink, key: &TxKey, now: UnixMillis) {
        let failed = self.calls.by_server_invite(key);
        self.calls.transaction_ended(key);
        if let Some(id) = failed {
            if let Some(call) = self.calls.get_mut(&id) {
                call.a_invite = None;
            }
            self.settle_if_done(s, &id, now);
        }
    }

    /// A response to one of our client transactions.
    pub(crate) fn on_response(
        &mut self,
        s: &mut Sink,
        key: &TxKey,
        resp: Response,
        now: UnixMillis,
    ) {
        let Some((id, purpose)) = self.client_of_live_call(key) else {
            return;
        };
        match purpose {
            Purpose::Invite => self.on_invite_response(s, &id, resp, now),
            Purpose::Relay => self.on_relay_response(s, &id, key, resp, now),
            Purpose::Fire => {}
            Purpose::Bye(side) if resp.code >= 200 => self.bye_done(s, &id, side, now),
            Purpose::Bye(_) => {}
        }
        self.calls.reschedule(&id, &s.cfg.timers);
    }

    /// One of our client transactions timed out (`code` 408) or could not be delivered
    /// (503).
    pub(crate) fn on_client_failure(
        &mut self,
        s: &mut Sink,
        key: &TxKey,
        code: u16,
        now: UnixMillis,
    ) {
        let Some((id, purpose)) = self.client_of_live_call(key) else {
            return;
        };
        match purpose {
            Purpose::Invite => self.invite_failed(s, &id, code, now),
            Purpose::Relay => self.relay_failed(s, &id, key, code, now),
            Purpose::Fire => {}
            Purpose::Bye(side) => self.bye_done(s, &id, side, now),
        }
    }

    /// The call and purpose of client transaction `key`; none while the call is contested
    /// (nothing is done for it until its read-back says whose it is).
    fn client_of_live_call(&self, key: &TxKey) -> Option<(String, Purpose)> {
        self.calls
            .by_client(key)
            .filter(|(id, _)| !self.calls.is_contested(id))
    }

    /// Sends `req` on a leg of call `id` as a client transaction.
    fn send(
        &mut self,
        s: &mut Sink,
        id: &str,
        req: crate::message::Request,
        to: crate::transaction::Peer,
        purpose: Purpose,
        now: UnixMillis,
    ) -> Option<TxKey> {
        let key = s.tx.send_request(req, to, now).ok()?;
        self.calls.track_client(key.clone(), id, purpose);
        Some(key)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `cseq` on leg `side` (§13.2.2.4): a
    /// request of its own, outside any transaction, and where it goes.
    fn ack_on(&mut self, s: &mut Sink, id: &str, side: Side, cseq: u32) -> Option<(Request, Peer)> {
        let hop = hop_on(s, self.calls.get(id)?.dialog(side));
        let via = s.via(hop.transport);
        let contact = s.contact(hop.transport, id);
        let leg = self.calls.get(id)?.dialog(side);
        Some((
            leg.request_with_cseq(Method::Ack, cseq, &via, &contact, 70),
            hop,
        ))
    }

    /// Sends the ACK for the callee's 2xx to our INVITE with CSeq `cseq`.
    fn ack_b(&mut self, s: &mut Sink, id: &str, cseq: u32) {
        if let Some((ack, hop)) = self.ack_on(s, id, Side::B, cseq) {
            s.send_stateless(&SipMessage::Request(ack), hop);
        }
    }

    /// The ACK that a relayed re-INVITE's 2xx waited for from `side` will not come: the
    /// other leg gets ours (CSeq `sent_cseq`), so its INVITE transaction ends.
    fn ack_other(&mut self, s: &mut Sink, id: &str, side: Side, sent_cseq: u32) {
        if let Some((ack, hop)) = self.ack_on(s, id, side.other(), sent_cseq) {
            s.send_stateless(&SipMessage::Request(ack), hop);
        }
    }

    /// Writes the call's record (a compare-and-swap on the version it had).
    fn persist(&mut self, s: &mut Sink, id: &str) {
        if s.cfg.cluster.strategy == crate::config::Strategy::None {
            // The call lives in this node's memory only (its version stays 0: unstored).
            return;
        }
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let expect = (call.version > 0).then_some(call.version);
        if s.clustered && expect.is_none() {
            // The caller's requests carry the A-leg's Call-ID: any node finds the call
            // through this index (written with the call's first record, deleted with it).
            s.writes.push(crate::store::StoreWrite::Put {
                key: crate::store::leg_key(&call.a.call_id),
                value: id.as_bytes().to_vec(),
                version: 1,
                expect: None,
                expires_at: None,
            });
            // The owner index: the adopters of a member that dies find its calls here.
            s.writes.push(takeover::owns_entry(call.owner, id));
        }
        let mut keys: Vec<&TxKey> = Vec::new();
        if matches!(call.state, CallState::Early | CallState::Cancelling) {
            // Ringing: its INVITE transactions go with it (see `Call::txs`).
            keys.extend(
                [&call.a_invite, &call.b_invite]
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k),
            );
        }
        let relays = std::mem::take(&mut call.relays);
        let mut stored_relays = Vec::new();
        if stores_relays(s) {
            // A re-INVITE (UPDATE, INFO …) in progress goes with it too: see `Call::relays`.
            for (k, r) in &relays {
                keys.extend([k, &r.server]);
                let mut r = r.clone();
                r.request.body.clear();
                stored_relays.push((k.clone(), r));
            }
        }
        call.txs = keys
            .into_iter()
            .filter_map(|k| s.tx.snapshot(k))
            .map(|mut snap| {
                // A request's offer already went to the other party in the request kept
                // beside it (whose copies an adopter may send): no need for it twice.
                if snap.key.role == crate::transaction::Role::Server {
                    snap.transaction.request_mut().body.clear();
                }
                snap
            })
            .collect();
        call.relays = stored_relays;
        call.version += 1;
        let value = serde_json::to_vec(&*call).unwrap_or_default();
        call.txs.clear();
        call.relays = relays;
        s.writes.push(crate::store::StoreWrite::Put {
            key: crate::store::call_key(id),
            value,
            version: call.version,
            expect,
            expires_at: None,
        });
    }
}

/// Where an INVITE to a callee at `peer` (and its CANCEL) goes first: the cluster's
/// balancer when one is set (see `ClusterConfig::outbound`), else the callee itself.
pub(super) fn first_hop(s: &Sink, peer: Peer) -> Peer {
    match s.cfg.cluster.outbound {
        Some(addr) if s.clustered && peer.transport == crate::transaction::Transport::Udp => Peer {
            addr,
            transport: peer.transport,
        },
        _ => peer,
    }
}

/// Where a request on leg `d` goes first: through the balancer as [`first_hop`] says when
/// the dialog has no route set of its own (the balancer relays a member's request to its
/// Request-URI), so that the party's answer reaches whoever runs the call by then, not
/// only the member that sent it; else the dialog's next hop.
pub(super) fn hop_on(s: &Sink, d: &crate::dialog::Dialog) -> Peer {
    let hop = d.next_hop();
    if d.route_set.is_empty() {
        first_hop(s, hop)
    } else {
        hop
    }
}

/// Whether a call's record holds its relays in progress (see `Call::relays`): with
/// `distributed` transactions. It is then written again when one ends, so that an adopter
/// does not take it up again.
pub(super) fn stores_relays(s: &Sink) -> bool {
    s.cfg.cluster.transactions == crate::config::Transactions::Distributed
}
