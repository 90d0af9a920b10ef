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
//! A re-INVITE is forwarded too: the owner retransmits its 2xx through us (its top Via),
//! and those copies pass through our Accepted transaction for 64·T1 (RFC 6026), while the
//! phone's ACK, which comes here when the phone talks to us, goes on to the owner; a
//! non-2xx gets the hop's ACK from us (§17.1.1.3). A CANCEL is forwarded like a request;
//! the phone's ACK of the owner's 487 goes on after it. An ACK is never forwarded as a
//! request, nor is a request a member forwarded already (members whose views differ must
//! not bounce it between them).

use super::Node;
use crate::ids::FORWARD_BRANCH;
use crate::message::{
    ack_for_non2xx, header_param, CSeq, Method, Request, Response, SipMessage, Via,
};
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
    /// Forwarded re-INVITEs answered 2xx, by our forwarding branch: the owner's
    /// retransmissions of the 2xx go on through the (Accepted) transaction until 64·T1.
    accepted: BTreeMap<String, (TxKey, UnixMillis)>,
    /// The ACKs of those 2xx (by Call-ID and CSeq number) go to the owner until 64·T1.
    acks: BTreeMap<(String, u32), (Peer, UnixMillis)>,
}

impl Relays {
    pub(super) fn remove(&mut self, key: &TxKey) {
        if self.by_key.remove(key).is_some() {
            self.by_branch.retain(|_, k| k != key);
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_key.clear();
        self.by_branch.clear();
        self.accepted.clear();
        self.acks.clear();
    }

    fn forget_expired(&mut self, now: UnixMillis) {
        self.accepted.retain(|_, (_, until)| *until > now);
        self.acks.retain(|_, (_, until)| *until > now);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Whether `req` (in a dialog, or a CANCEL) may be forwarded to an owner: not an ACK (an
/// ACK for a 2xx is forwarded apart, `forward_ack`), and not forwarded by a member already.
/// A CANCEL reaches its INVITE's transaction there: the owner keys a forwarded request by
/// the Via under the member's.
pub(super) fn forwardable(req: &Request) -> bool {
    req.method != Method::Ack
        && !req
            .headers
            .get("Via")
            .and_then(Via::parse)
            .is_some_and(|v| v.is_forwarding())
}

impl Node {
    /// Sends a copy of `req` (held under server transaction `key`) to the owner at `to`.
    pub(super) fn forward(&mut self, key: &TxKey, req: &Request, to: SocketAddr) {
        if self.cluster.relays.by_key.contains_key(key) {
            return;
        }
        self.cluster.relays.forget_expired(self.now);
        let hops = crate::b2bua::max_forwards(req);
        if hops == 0 {
            let now = self.now;
            return self.sink.reply(key, req, 483, None, &[], now);
        }
        let mut copy = req.clone();
        copy.headers.set("Max-Forwards", (hops - 1).to_string());
        let branch =
            self.push_forwarding_via(&mut copy, &format!("{}/{}", key.branch, key.sent_by));
        let owner = Peer {
            transport: Transport::Udp,
            addr: to,
        };
        self.sink.metrics.forwarded += 1;
        self.sink
            .send_stateless(&SipMessage::Request(copy.clone()), owner);
        let relays = &mut self.cluster.relays;
        if req.method == Method::Cancel {
            // The owner answers the cancelled INVITE 487 straight to the phone, whose ACK
            // (hop by hop, §17.1.1.3) comes the way its CANCEL came: here. It goes on to
            // the owner, or the owner's INVITE transaction sends its 487 until Timer H.
            let h = &req.headers;
            let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
            let call_id = h.get("Call-ID").unwrap_or("").to_string();
            let until = self.now + self.sink.cfg.timers.timeout();
            relays.acks.insert((call_id, cseq), (owner, until));
        }
        relays.by_branch.insert(branch, key.clone());
        relays.by_key.insert(key.clone(), (copy, owner));
    }

    /// Forwards the requests held under `call_id` that may be to their call's owner, when
    /// members tell where it is; a forwarded request is held until it is answered (64·T1).
    pub(super) fn forward_held(&mut self, call_id: &str) {
        let Some(&(owner, until, _)) = self.cluster.held.get(call_id) else {
            return;
        };
        let Some(to) = self.cluster.addresses.get(&owner).copied() else {
            return;
        };
        self.forward_strays(call_id, to);
        let entries: Vec<(TxKey, Request)> = self
            .cluster
            .waiting
            .peek(call_id)
            .filter(|(_, req, _)| forwardable(req))
            .map(|(key, req, _)| (key.clone(), req.clone()))
            .collect();
        if entries.is_empty() {
            return;
        }
        for (key, req) in &entries {
            self.forward(key, req, to);
        }
        let life = self.now + self.sink.cfg.timers.timeout();
        if let Some(held) = self.cluster.held.get_mut(call_id) {
            held.1 = until.max(life);
        }
    }

    /// The owner answered the forwarded request of server transaction `key` finally: it
    /// waits no more.
    pub(super) fn answered_elsewhere(&mut self, key: &TxKey) {
        let mut call = None;
        self.cluster.waiting.retain_named(|name, (k, _, _)| {
            let it = k == key;
            if it {
                call = Some(name.to_string());
            }
            !it
        });
        if let Some(call_id) = call.filter(|c| !self.cluster.waiting.contains(c)) {
            self.forget_lookups(&call_id);
        }
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
            .filter(Via::is_forwarding)
            .and_then(|v| v.branch().map(str::to_string))
        else {
            return false;
        };
        // An answer to a request no longer waiting (answered, let go, taken over) is
        // dropped: the phone's retransmission is forwarded afresh if need be.
        let relays = &mut self.cluster.relays;
        relays.forget_expired(now);
        let (key, again) = match relays.by_branch.get(&branch) {
            Some(k) => (k.clone(), false),
            None => match relays.accepted.get(&branch) {
                Some((k, _)) => (k.clone(), true),
                None => return true,
            },
        };
        let copy = relays.by_key.get(&key).cloned();
        let mut out = resp.clone();
        pop_top_via(&mut out);
        self.sink.metrics.forwarded_responses += 1;
        let (code, last) = (out.code, resp.code >= 200 && !again);
        self.sink.respond(&key, out, now);
        if !last {
            return true;
        }
        if let Some((invite, owner)) = copy.filter(|_| key.method == Method::Invite) {
            let until = now + self.sink.cfg.timers.timeout();
            if (200..300).contains(&code) {
                // The owner retransmits its 2xx through us until the ACK, which the phone
                // sends end to end: both go on through here (§13.3.1.4).
                let h = &invite.headers;
                let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
                let call_id = h.get("Call-ID").unwrap_or("").to_string();
                let relays = &mut self.cluster.relays;
                relays.accepted.insert(branch, (key.clone(), until));
                relays.acks.insert((call_id, cseq), (owner, until));
            } else {
                // The owner's transaction waits for the hop's ACK of its non-2xx
                // (§17.1.1.3), as our own transaction waits for the phone's.
                let ack = ack_for_non2xx(&invite, resp);
                self.sink.send_stateless(&SipMessage::Request(ack), owner);
            }
        }
        self.cluster.relays.remove(&key);
        self.answered_elsewhere(&key);
        true
    }

    /// An ACK outside any transaction of ours: when it acknowledges a 2xx an owner sent
    /// through us to a forwarded re-INVITE, or the 487 to an INVITE whose CANCEL we
    /// forwarded, it goes on to the owner. Whether it was one.
    pub(super) fn forward_ack(&mut self, ack: &Request) -> bool {
        let h = &ack.headers;
        let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
        let key = (h.get("Call-ID").unwrap_or("").to_string(), cseq);
        let Some(&(owner, until)) = self.cluster.relays.acks.get(&key) else {
            return false;
        };
        let tag = h
            .get("To")
            .and_then(|t| header_param(t, "tag"))
            .unwrap_or("");
        if until <= self.now || self.b2bua.dialog_of(&key.0, tag).is_some() {
            // Ours now (the owner left and we took the call over): the B2BUA's.
            return false;
        }
        let mut copy = ack.clone();
        let hops = crate::b2bua::max_forwards(ack).saturating_sub(1);
        copy.headers.set("Max-Forwards", hops.to_string());
        let branch = h
            .get("Via")
            .and_then(Via::parse)
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        self.push_forwarding_via(&mut copy, &format!("{branch}/ack"));
        self.sink.metrics.forwarded += 1;
        self.sink.send_stateless(&SipMessage::Request(copy), owner);
        true
    }

    /// Puts our forwarding Via on top of `req`, its branch derived from `from` (what names
    /// the request at its sender) and this node; returns the branch. Sent-by is where
    /// members reach this node: its own member record's address, else what it advertises.
    fn push_forwarding_via(&self, req: &mut Request, from: &str) -> String {
        let hash =
            crate::cluster::hrw::key_hash(format!("{}/{from}", self.sink.node_id).as_bytes());
        let branch = format!("{FORWARD_BRANCH}{hash:016x}");
        let me = self.cluster.addresses.get(&self.sink.node_id);
        let me = me.copied().unwrap_or(self.sink.advertise);
        req.headers
            .push_front("Via", format!("SIP/2.0/UDP {me};branch={branch}"));
        branch
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
