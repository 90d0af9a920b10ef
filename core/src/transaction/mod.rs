//! The transaction layer (RFC 3261 §17, with RFC 6026 and RFC 4320): the four state
//! machines, matching of requests and responses to transactions, and a sans-IO face in the
//! style of quinn-proto.
//!
//! The caller pushes inputs (`handle_message`, `handle_timeout`, `send_request`,
//! `send_response`, `handle_transport_error`) and drains outputs (`poll_transmit`,
//! `poll_event`) until they return `None`, then sleeps until `poll_timeout()`.
//!
//! Responses of a server transaction go back to the peer the request came from (over the
//! same connection for streams; for UDP this is what `rport` gives, RFC 3581).

mod client_invite;
mod client_non_invite;
mod key;
mod machine;
mod output;
mod server_invite;
mod server_non_invite;
mod table;
mod timers;

pub use client_invite::{ClientInviteState, ClientInviteTransaction};
pub use client_non_invite::{ClientNonInviteState, ClientNonInviteTransaction};
pub use key::{Peer, Role, Transport, TxKey};
pub use machine::{Snapshot, Transaction};
pub use output::{Origin, Transmit, TxError, TxEvent};
pub use server_invite::{ServerInviteState, ServerInviteTransaction};
pub use server_non_invite::{ServerNonInviteState, ServerNonInviteTransaction};
pub use timers::{lay_schedule, Deadline, Timer, TimerConfig, TIMER_D_UNRELIABLE, TRYING_DELAY};

use crate::message::{CSeq, Method, Request, Response, SipMessage, Via};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use table::Table;

/// Where a machine's outputs go during one step.
pub(crate) struct Out<'a> {
    key: &'a TxKey,
    /// The Call-ID of the transaction's request, which every message it sends carries.
    call_id: Option<&'a str>,
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<TxEvent>,
}

impl Out<'_> {
    fn send(&mut self, to: Peer, bytes: Vec<u8>, origin: Origin, retransmission: bool) {
        self.transmits.push_back(Transmit {
            to,
            bytes,
            call_id: self.call_id.map(str::to_string),
            origin,
            retransmission,
        });
    }

    /// The transaction's request (`again`: a retransmission).
    fn send_request(&mut self, to: Peer, bytes: Vec<u8>, again: bool) {
        self.send(to, bytes, Origin::Request(self.key()), again);
    }

    /// The ACK of an INVITE client transaction for a non-2xx answer.
    fn send_ack(&mut self, to: Peer, bytes: Vec<u8>, again: bool) {
        self.send(to, bytes, Origin::Ack(self.key()), again);
    }

    /// A response of a server transaction.
    fn send_response(&mut self, to: Peer, resp: &Response, again: bool) {
        let origin = Origin::Response(self.key(), resp.code);
        self.send(to, resp.to_bytes(), origin, again);
    }

    fn event(&mut self, event: TxEvent) {
        self.events.push_back(event);
    }

    fn key(&self) -> TxKey {
        self.key.clone()
    }
}

/// The server transport's note of where a request came from, in its top Via (§18.2.1,
/// RFC 3581): `received=ADDR` when the sent-by host is not the source address, and
/// `rport=PORT` with `received` when the client asked with a bare `rport`. Responses copy
/// the Via, so a phone behind NAT learns its public address; they always go back to the
/// source address and port (symmetric response, as RFC 3581 asks for `rport`).
fn stamp_source(req: &mut Request, from: Peer) {
    let Some(top) = req.headers.first_mut("Via") else {
        return;
    };
    let Some(via) = Via::parse(top) else {
        return;
    };
    let ip = from.addr.ip();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let wants_rport = via.param("rport") == Some("");
    let host_differs = host.parse::<std::net::IpAddr>().ok() != Some(ip);
    if !(wants_rport || host_differs) || via.param("received").is_some() {
        return;
    }
    let mut parts: Vec<String> = top.split(';').map(str::to_string).collect();
    for p in parts.iter_mut().skip(1) {
        if p.trim().eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", from.addr.port());
        }
    }
    parts.push(format!("received={ip}"));
    *top = parts.join(";");
}

/// All transactions of a node, matched by key, with their timers in one index.
#[derive(Debug, Default)]
pub struct TransactionLayer {
    config: TimerConfig,
    /// Every transaction, with the index of all their deadlines.
    transactions: Table,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl TransactionLayer {
    pub fn new(config: TimerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// Whether some transaction still waits for its final response.
    pub fn any_awaiting_final_response(&self) -> bool {
        self.transactions
            .iter()
            .any(|(_, t)| t.awaits_final_response())
    }

    pub fn is_empty(&self) -> bool {
        self.transactions.len() == 0
    }

    pub fn get(&self, key: &TxKey) -> Option<&Transaction> {
        self.transactions.get(key)
    }

    /// Every live transaction, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&TxKey, &Transaction)> {
        self.transactions.iter()
    }

    /// The next deadline of any transaction.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.transactions.next_deadline()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// Runs `f` on transaction `key` with an output sink, then reschedules it and removes it
    /// if it terminated.
    fn step<R>(
        &mut self,
        key: &TxKey,
        f: impl FnOnce(&mut Transaction, &mut Out) -> R,
    ) -> Option<R> {
        let id = self.transactions.id(key)?;
        self.step_id(id, f)
    }

    /// [`TransactionLayer::step`] of transaction `id`.
    fn step_id<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Transaction, &mut Out) -> R,
    ) -> Option<R> {
        let (key, tx) = self.transactions.entry_mut(id)?;
        let call_id = tx.request().headers.get("Call-ID").map(str::to_string);
        let mut out = Out {
            key,
            call_id: call_id.as_deref(),
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let r = f(tx, &mut out);
        self.settle(id);
        Some(r)
    }

    /// Sets transaction `id`'s deadline after a step, or removes it if it terminated.
    fn settle(&mut self, id: u64) {
        let cfg = &self.config;
        if let Some(key) = self
            .transactions
            .settle(id, |tx| tx.deadline(cfg).map(|(at, _)| at))
        {
            self.events.push_back(TxEvent::Terminated { key });
        }
    }

    fn insert(&mut self, key: TxKey, tx: Transaction) {
        let id = self.transactions.insert(key, tx);
        self.settle(id);
    }

    /// Fires every timer due at `now`, in (deadline, creation) order; a transaction's own
    /// timers fire in deadline order, ties in the order of [`Timer`].
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        while let Some((at, id)) = self.transactions.first_timer() {
            if at > now {
                break;
            }
            let cfg = self.config;
            let fired = self.step_id(id, |tx, out| {
                if let Some((due, timer)) = tx.deadline(&cfg) {
                    if due <= now {
                        tx.on_timer(timer, now, out);
                    }
                }
            });
            if fired.is_none() {
                // Stale index entry; cannot happen, but never loop on it.
                self.transactions.unschedule(id);
            }
        }
    }

    /// A message received from `from` (already parsed and validated).
    pub fn handle_message(&mut self, msg: SipMessage, from: Peer, now: UnixMillis) {
        match msg {
            SipMessage::Request(req) => self.handle_request(req, from, now),
            SipMessage::Response(resp) => self.handle_response(resp, from, now),
        }
    }

    fn handle_request(&mut self, mut req: Request, from: Peer, now: UnixMillis) {
        let Some(key) = TxKey::for_request(&req) else {
            return; // validation guarantees a Via; nothing to match otherwise
        };
        stamp_source(&mut req, from);
        if self.transactions.contains(&key) {
            self.step(&key, |tx, out| match tx {
                Transaction::ServerInvite(t) => t.on_request(req, from, now, out),
                Transaction::ServerNonInvite(t) => t.on_request(&req, out),
                _ => {}
            });
            return;
        }
        if req.method == Method::Ack {
            self.events.push_back(TxEvent::Ack { request: req, from });
            return;
        }
        let tx = if req.method == Method::Invite {
            Transaction::ServerInvite(ServerInviteTransaction::new(req.clone(), from, now))
        } else {
            Transaction::ServerNonInvite(ServerNonInviteTransaction::new(req.clone(), from, now))
        };
        self.events.push_back(TxEvent::Request {
            key: key.clone(),
            request: req,
            from,
        });
        self.insert(key, tx);
    }

    fn handle_response(&mut self, resp: Response, from: Peer, now: UnixMillis) {
        let key = TxKey::for_response(&resp);
        match key {
            Some(key) if self.transactions.contains(&key) => {
                self.step(&key, |tx, out| match tx {
                    Transaction::ClientInvite(t) => t.on_response(resp, now, out),
                    Transaction::ClientNonInvite(t) => t.on_response(resp, now, out),
                    _ => {}
                });
            }
            _ => self.events.push_back(TxEvent::StrayResponse {
                response: resp,
                from,
            }),
        }
    }

    /// Starts a client transaction for `req` (its top Via must carry a fresh magic-cookie
    /// branch) and sends the request to `to`.
    pub fn send_request(
        &mut self,
        req: Request,
        to: Peer,
        now: UnixMillis,
    ) -> Result<TxKey, TxError> {
        if req.method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        let key = TxKey::for_outgoing(&req).ok_or(TxError::BadRequest)?;
        if req.headers.get("CSeq").and_then(CSeq::parse).is_none() {
            return Err(TxError::BadRequest);
        }
        if self.transactions.contains(&key) {
            return Err(TxError::DuplicateTransaction);
        }
        self.transmits.push_back(Transmit {
            to,
            bytes: req.to_bytes(),
            call_id: req.headers.get("Call-ID").map(str::to_string),
            origin: Origin::Request(key.clone()),
            retransmission: false,
        });
        let tx = if req.method == Method::Invite {
            Transaction::ClientInvite(ClientInviteTransaction::new(req, to, now))
        } else {
            Transaction::ClientNonInvite(ClientNonInviteTransaction::new(req, to, now))
        };
        self.insert(key.clone(), tx);
        Ok(key)
    }

    /// Sends `resp` through server transaction `key`.
    pub fn send_response(
        &mut self,
        key: &TxKey,
        resp: Response,
        now: UnixMillis,
    ) -> Result<(), TxError> {
        self.step(key, |tx, out| match tx {
            Transaction::ServerInvite(t) => t.send_response(resp, now, out),
            Transaction::ServerNonInvite(t) => t.send_response(resp, now, out),
            _ => Err(TxError::UnknownTransaction),
        })
        .unwrap_or(Err(TxError::UnknownTransaction))
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, stateless responses);
    /// `again` when it is a copy of one sent before (the TU's 2xx retransmissions).
    pub fn send_stateless(&mut self, msg: &SipMessage, to: Peer, again: bool) {
        self.transmits.push_back(Transmit {
            to,
            bytes: msg.to_bytes(),
            call_id: msg.headers().get("Call-ID").map(str::to_string),
            origin: Origin::Stateless,
            retransmission: again,
        });
    }

    /// The last message of transaction `key` really left at `now` (its batch waited for the
    /// store): retransmission intervals count from there, so the first copy and the next
    /// are never closer than the RFC's interval.
    pub fn departed(&mut self, key: &TxKey, now: UnixMillis) {
        self.step(key, |tx, _| {
            let at = match tx {
                Transaction::ClientInvite(t) => &mut t.last_sent_at,
                Transaction::ClientNonInvite(t) => &mut t.last_sent_at,
                Transaction::ServerInvite(t) => &mut t.last_sent_at,
                Transaction::ServerNonInvite(_) => return,
            };
            *at = (*at).max(now);
        });
    }

    /// The transport could not deliver a message of transaction `key` (§17.1.4, §17.2.4).
    pub fn handle_transport_error(&mut self, key: &TxKey, now: UnixMillis) {
        self.step(key, |tx, out| tx.on_transport_error(now, out));
    }

    /// Forgets transaction `key` at once, without sending anything: its last response was
    /// never sent (the store write it depended on failed), so a retransmitted request must
    /// reach the TU again instead of getting that response.
    pub fn abandon(&mut self, key: &TxKey) {
        if self.transactions.remove(key).is_some() {
            self.events
                .push_back(TxEvent::Terminated { key: key.clone() });
        }
    }

    /// The 2xx sent through INVITE server transaction `key` never left (its store write
    /// failed): the transaction goes back to Proceeding, so that the TU can still send a
    /// final response. Returns the withdrawn 2xx; `None` if it is not an INVITE server
    /// transaction in Accepted.
    pub fn withdraw_2xx(&mut self, key: &TxKey, now: UnixMillis) -> Option<Response> {
        self.step(key, |tx, _| match tx {
            Transaction::ServerInvite(t) => t.withdraw_2xx(now),
            _ => None,
        })
        .flatten()
    }

    /// Sends the last response of INVITE server transaction `key` again (its first copy
    /// never left, and over TCP no timer would resend it).
    pub fn resend_response(&mut self, key: &TxKey) {
        self.step(key, |tx, out| {
            if let Transaction::ServerInvite(t) = tx {
                // Its first copy never left: this is no retransmission.
                t.resend_last(out, false);
            }
        });
    }

    /// Forgets the client transaction that sends `req` (whose first copy never left):
    /// nothing of it is retransmitted.
    pub fn abandon_request(&mut self, req: &Request) {
        if let Some(key) = TxKey::for_outgoing(req) {
            self.abandon(&key);
        }
    }

    /// The INVITE server transaction that a CANCEL server transaction cancels (§9.2): same
    /// branch and sent-by, method INVITE.
    pub fn invite_for_cancel(&self, cancel: &TxKey) -> Option<TxKey> {
        let key = TxKey {
            method: Method::Invite,
            ..cancel.clone()
        };
        self.transactions.contains(&key).then_some(key)
    }

    /// A snapshot of transaction `key`.
    pub fn snapshot(&self, key: &TxKey) -> Option<Snapshot> {
        self.transactions.get(key).map(|t| Snapshot {
            key: key.clone(),
            transaction: t.clone(),
        })
    }

    /// Snapshots of every transaction, in creation order (restoring them in this order keeps
    /// the order in which their deadlines fire).
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.transactions
            .iter()
            .map(|(k, t)| Snapshot {
                key: k.clone(),
                transaction: t.clone(),
            })
            .collect()
    }

    /// Loads transactions another node (or this one before a restart) snapshotted, rebuilds
    /// their timers, and fires at once, in order, the deadlines that have already passed.
    pub fn restore(&mut self, snapshots: impl IntoIterator<Item = Snapshot>, now: UnixMillis) {
        for mut s in snapshots {
            s.transaction.catch_up(&self.config, now);
            // An earlier transaction of this key given up and not yet reported ended is
            // moot: its end must not be taken for this one's (store-leader-change-during-
            // takeover seed 76: a node that had forgotten a call and loaded it again lost
            // track of its restored INVITE, which went on being retransmitted).
            self.events
                .retain(|e| !matches!(e, TxEvent::Terminated { key } if *key == s.key));
            self.insert(s.key, s.transaction);
        }
        self.handle_timeout(now);
    }
}

#[cfg(test)]
mod tests;
