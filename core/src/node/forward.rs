//! Forwarding to a live owner: an in-dialog request for a call that another live member
//! runs (a phone still talking to a member that restarted and took its calls back, a
//! balancer that routed by an older incarnation's token, a phone's failover copy) is
//! passed to the owner, and the owner's answer comes back through this node.
//!
//! The request keeps its server transaction here and stays held (see `cluster`): should
//! the owner leave the member list before it answers, the node reads the call again and
//! takes it over, and the transaction makes sure the phone gets one final response either
//! way. A copy goes to the owner as a proxy sends it (RFC 3261 §16.6): our Via on top, its
//! branch derived from the request's (a retransmission reaches the owner's same
//! transaction), Max-Forwards one less. Each retransmission the transaction absorbs is
//! forwarded again (the copy may be lost; cluster-chaos seed 529 answered one locally
//! instead, a second final response). The owner's responses, whose top Via is ours, lose
//! it and go out through the server transaction.
//!
//! Only non-INVITE requests are forwarded; a re-INVITE and its CANCEL wait held (their
//! 2xx and ACK run end to end, past this node). A request that was forwarded once (its top
//! Via is a forwarding Via) is not forwarded again: members whose views differ must not
//! bounce it between them.

use super::Node;
use crate::ids::FORWARD_BRANCH;
use crate::message::{Method, Request, Response, SipMessage, Via};
use crate::transaction::{Peer, Transport, TxKey};
use crate::UnixMillis;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Requests forwarded to their call's owner and not yet answered finally.
#[derive(Default)]
pub(super) struct Relays {
    /// By our server transaction: the copy sent (sent again on each retransmission) and
    /// where it went.
    by_key: BTreeMap<TxKey, (Request, Peer)>,
    /// Our forwarding branch → the server transaction it answers.
    by_branch: BTreeMap<String, TxKey>,
}

impl Relays {
    fn remove(&mut self, key: &TxKey) {
        if self.by_key.remove(key).is_some() {
            self.by_branch.retain(|_, k| k != key);
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_key.clear();
        self.by_branch.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Whether `req` may be forwarded to an owner: not an INVITE, ACK or CANCEL, and not
/// forwarded by a member already.
pub(super) fn forwardable(req: &Request) -> bool {
    !matches!(req.method, Method::Invite | Method::Ack | Method::Cancel)
        && !top_via_is_forwarding(req.headers.get("Via"))
}

fn top_via_is_forwarding(via: Option<&str>) -> bool {
    via.and_then(Via::parse)
        .is_some_and(|v| v.branch().is_some_and(|b| b.starts_with(FORWARD_BRANCH)))
}

impl Node {
    /// Sends a copy of `req` (held under server transaction `key`) to the owner at `to`.
    pub(super) fn forward(&mut self, key: &TxKey, req: &Request, to: SocketAddr) {
        if self.cluster.relays.by_key.contains_key(key) {
            return;
        }
        let hops = crate::b2bua::max_forwards(req);
        if hops == 0 {
            let now = self.now;
            return self.sink.reply(key, req, 483, None, &[], now);
        }
        let mut copy = req.clone();
        copy.headers.set("Max-Forwards", (hops - 1).to_string());
        let hash = crate::cluster::hrw::key_hash(
            format!("{}/{}/{}", self.sink.node_id, key.branch, key.sent_by).as_bytes(),
        );
        let branch = format!("{FORWARD_BRANCH}{hash:016x}");
        let me = self.direct_address();
        copy.headers
            .push_front("Via", format!("SIP/2.0/UDP {me};branch={branch}"));
        let owner = Peer {
            transport: Transport::Udp,
            addr: to,
        };
        self.sink.metrics.forwarded += 1;
        self.sink
            .send_stateless(&SipMessage::Request(copy.clone()), owner);
        let relays = &mut self.cluster.relays;
        relays.by_branch.insert(branch, key.clone());
        relays.by_key.insert(key.clone(), (copy, owner));
    }

    /// A retransmission of a request forwarded and not yet answered: forwarded again.
    pub(super) fn forward_again(&mut self, req: &Request) {
        let Some(key) = TxKey::for_request(req) else {
            return;
        };
        if let Some((copy, owner)) = self.cluster.relays.by_key.get(&key) {
            let (copy, owner) = (SipMessage::Request(copy.clone()), *owner);
            self.sink.metrics.forwarded += 1;
            self.sink.resend_stateless(&copy, owner);
        }
    }

    /// A response outside any transaction of ours: when its top Via is one of our
    /// forwarding Vias it answers a forwarded request, and goes out through that request's
    /// server transaction (a final one ends the hold). Whether it was one.
    pub(super) fn relay_response(&mut self, resp: &Response, now: UnixMillis) -> bool {
        let Some(branch) = resp
            .headers
            .get("Via")
            .and_then(Via::parse)
            .and_then(|v| v.branch().map(str::to_string))
            .filter(|b| b.starts_with(FORWARD_BRANCH))
        else {
            return false;
        };
        // An answer to a request no longer waiting (answered, let go, taken over) is
        // dropped: the phone's retransmission is forwarded afresh if need be.
        let Some(key) = self.cluster.relays.by_branch.get(&branch).cloned() else {
            return true;
        };
        let mut resp = resp.clone();
        pop_top_via(&mut resp);
        self.sink.metrics.forwarded_responses += 1;
        let last = resp.code >= 200;
        self.sink.respond(&key, resp, now);
        if last {
            self.cluster.relays.remove(&key);
            self.answered_elsewhere(&key);
        }
        true
    }

    /// Where members reach this node: its own member record's address, else what it
    /// advertises.
    fn direct_address(&self) -> SocketAddr {
        self.cluster
            .addresses
            .get(&self.sink.node_id)
            .copied()
            .unwrap_or(self.sink.advertise)
    }

    /// Forgets the relays of the requests parked under `keys`' call (taken over, let go).
    pub(super) fn drop_relays(&mut self, keys: &[TxKey]) {
        for k in keys {
            self.cluster.relays.remove(k);
        }
    }
}

/// Removes the first Via value (a header line may carry several, comma-separated).
fn pop_top_via(resp: &mut Response) {
    let h = &mut resp.headers.0;
    let Some(i) = h.iter().position(|h| h.name.eq_ignore_ascii_case("Via")) else {
        return;
    };
    let rest = h
        .get(i)
        .and_then(|v| v.value.split_once(','))
        .map(|(_, rest)| rest.trim().to_string())
        .filter(|rest| !rest.is_empty());
    match (rest, h.get_mut(i)) {
        (Some(rest), Some(via)) => via.value = rest,
        _ => {
            h.remove(i);
        }
    }
}
