//! A new call, the answers to the INVITE sent to the callee, and CANCEL.

use super::call::{Call, CallState, Pending2xx, Side};
use super::calls::Purpose;
use super::wire::{copy_body, max_forwards, session_expires};
use super::B2bua;
use crate::config::Transactions;
use crate::dialog::{strip_tag, uri_of, Dialog};
use crate::message::{header_param, response_to, CSeq, Method, Request, Response};
use crate::sink::Sink;
use crate::transaction::{Peer, TxKey};
use crate::UnixMillis;

impl B2bua {
    /// Starts a call for the caller's INVITE (server transaction `key`, from `from`) to
    /// `target` (its URI, where it is, and the Path its binding was registered through),
    /// which the node has chosen.
    pub(crate) fn new_call(
        &mut self,
        s: &mut Sink,
        key: TxKey,
        req: Request,
        from: Peer,
        target: (String, Peer, Vec<String>),
        now: UnixMillis,
    ) {
        let (target_uri, target_peer, path) = target;
        let h = &req.headers;
        let (Some(from_v), Some(to_v), Some(a_call_id), Some(cseq)) = (
            h.get("From"),
            h.get("To"),
            h.get("Call-ID"),
            h.get("CSeq").and_then(CSeq::parse),
        ) else {
            return s.reply(&key, &req, 400, None, &[], now);
        };
        let Some(a_contact) = h.get("Contact").map(uri_of) else {
            return s.reply(&key, &req, 400, Some("Missing Contact"), &[], now);
        };
        let a = Dialog {
            call_id: a_call_id.to_string(),
            local_tag: s.ids.tag(),
            remote_tag: header_param(from_v, "tag").map(str::to_string),
            local_uri: strip_tag(to_v),
            remote_uri: strip_tag(from_v),
            local_cseq: 0,
            remote_cseq: Some(cseq.seq),
            route_set: h.get_all("Record-Route").map(str::to_string).collect(),
            remote_target: a_contact,
            peer: from,
        };
        let mut b = Dialog {
            call_id: s.ids.call_id(),
            local_tag: s.ids.tag(),
            remote_tag: None,
            local_uri: strip_tag(from_v),
            remote_uri: strip_tag(to_v),
            local_cseq: 0,
            remote_cseq: None,
            route_set: Vec::new(),
            remote_target: target_uri,
            peer: target_peer,
        };
        let via = s.via(target_peer.transport);
        let contact = s.contact(target_peer.transport, &b.call_id);
        let mf = max_forwards(&req);
        let mut b_inv = b.request(Method::Invite, &via, &contact, mf - 1);
        for name in ["Allow", "Supported", "Session-Expires", "Min-SE", "Accept"] {
            for v in h.get_all(name) {
                b_inv.headers.push(name, v);
            }
        }
        copy_body(&req.headers, &req.body, &mut b_inv.headers, &mut b_inv.body);
        // A callee registered through proxies (Path, RFC 3327) is reached through them: a
        // preloaded route (its CANCEL and the ACK of a failure copy it), sent to the first.
        for p in &path {
            b_inv.headers.push("Route", p.as_str());
        }
        let first = invite_hop(s, &b_inv, target_peer);
        let id = b.call_id.clone();
        let session_interval =
            session_expires(h.get("Session-Expires")).unwrap_or(s.cfg.session_expires_secs);
        let Some(b_key) = self.send(s, &id, b_inv.clone(), first, Purpose::Invite, now) else {
            return s.reply(&key, &req, 500, None, &[], now);
        };
        s.metrics.calls_attempted += 1;
        // Tell the caller at once that we are on it (§17.2.1 allows it before 200 ms).
        let trying = response_to(&req, 100, None, "");
        s.respond(&key, trying, now);
        let call = Call {
            id: id.clone(),
            version: 0,
            state: CallState::Early,
            a,
            b,
            a_invite: Some((key, req)),
            b_invite: Some((b_key, b_inv)),
            txs: Vec::new(),
            cancelled_at: None,
            b_provisional: false,
            created_at: now,
            answered_at: None,
            session_interval,
            refreshed_at: now,
            max_duration: s.cfg.max_call_duration_secs,
            pending_2xx: None,
            relays: Vec::new(),
            bye_owed: false,
            awaiting_ack: None,
            byes: Vec::new(),
            owner: s.node_id,
            owner_incarnation: s.incarnation,
        };
        self.calls.insert(call, &s.cfg.timers);
        if s.clustered {
            // Stored from its first INVITE, which leaves only once the record is durable:
            // should this node die while the call rings, its adopter knows of it.
            self.persist(s, &id);
        }
    }

    /// CANCEL of a caller's INVITE (§9.2).
    pub(crate) fn on_cancel(&mut self, s: &mut Sink, key: &TxKey, req: &Request, now: UnixMillis) {
        let Some(invite) = s.tx.invite_for_cancel(key) else {
            return s.reply(key, req, 481, None, &[], now);
        };
        // The INVITE's transaction exists, so the CANCEL gets 200; it changes nothing if
        // the INVITE was already answered (its call is then no longer listed).
        s.reply(key, req, 200, None, &[], now);
        if let Some(id) = self.calls.by_server_invite(&invite) {
            self.give_up_ringing(s, &id, 487, now);
        }
    }

    /// A ringing call is given up: the caller's INVITE gets `code` (487 when the caller
    /// cancelled, 408 when Timer C fired), the callee a CANCEL once it has sent a
    /// provisional (before that, its INVITE transaction times out on its own). The call
    /// waits in `Cancelling` for the callee's final answer.
    pub(super) fn give_up_ringing(&mut self, s: &mut Sink, id: &str, code: u16, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.state != CallState::Early {
            return;
        }
        call.state = CallState::Cancelling;
        call.cancelled_at = Some(now);
        let (a_tag, a_invite) = (call.a.local_tag.clone(), call.a_invite.clone());
        let send_cancel = call.b_provisional;
        if let Some((k, r)) = a_invite {
            let resp = response_to(&r, code, None, &a_tag);
            s.respond(&k, resp, now);
        }
        if send_cancel {
            self.cancel_callee(s, id, now);
        }
        s.metrics.calls_failed += 1;
        if self.calls.get(id).is_some_and(|c| c.version > 0) {
            // The caller's final response reveals that the call is over: an adopter must
            // not answer it again.
            self.persist(s, id);
        }
        self.calls.reschedule(id, &s.cfg.timers);
    }

    /// CANCEL for the INVITE to the callee (§9.1; only once it has sent a provisional).
    fn cancel_callee(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        let Some((b_req, peer)) = self
            .calls
            .get(id)
            .and_then(|c| Some((c.b_invite.as_ref()?.1.clone(), c.b.peer)))
        else {
            return;
        };
        let cancel = crate::message::cancel_for(&b_req);
        // The way its INVITE went (§9.1).
        let hop = invite_hop(s, &b_req, peer);
        self.send(s, id, cancel, hop, Purpose::Fire, now);
    }

    pub(super) fn on_invite_response(
        &mut self,
        s: &mut Sink,
        id: &str,
        resp: Response,
        now: UnixMillis,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let to_tag = resp
            .headers
            .get("To")
            .and_then(|t| header_param(t, "tag"))
            .map(str::to_string);
        let code = resp.code;
        if code == 100 {
            return;
        }
        if (101..200).contains(&code) {
            let first = !call.b_provisional;
            call.b_provisional = true;
            if to_tag.is_some() {
                call.b.remote_tag = to_tag;
            }
            if call.state == CallState::Cancelling {
                if first {
                    self.cancel_callee(s, id, now);
                }
                return;
            }
            let Some((akey, areq)) = call.a_invite.clone() else {
                return;
            };
            let mut out = response_to(&areq, code, Some(&resp.reason), &call.a.local_tag);
            echo_record_route(&areq, &mut out);
            out.headers
                .push("Contact", s.contact(call.a.peer.transport, id));
            copy_body(&resp.headers, &resp.body, &mut out.headers, &mut out.body);
            let stored = call.version > 0;
            s.respond(&akey, out, now);
            if first && stored && s.cfg.cluster.transactions == Transactions::Distributed {
                // The callee rings (a CANCEL may go to it now) and the caller heard so: an
                // adopter goes on from here, not from before (see `tests/split_run.rs`).
                self.persist(s, id);
            }
            return;
        }
        if (200..300).contains(&code) {
            return self.on_invite_2xx(s, id, resp, to_tag, now);
        }
        // 300-699: relay the failure (the transaction ACKs the callee).
        let state = call.state;
        if state == CallState::Early {
            if let Some((akey, areq)) = call.a_invite.clone() {
                let out = response_to(&areq, code, Some(&resp.reason), &call.a.local_tag);
                s.respond(&akey, out, now);
            }
            s.metrics.calls_failed += 1;
        }
        if state != CallState::Confirmed {
            self.wind_down(s, id, now);
        }
    }

    /// The callee's INVITE transaction has its final answer (a failure, or none: it timed
    /// out), and the caller its final response. A stored call stays (`Cancelling`, its
    /// record written with the caller's transaction holding that response) until the
    /// caller's transaction ends: should this node die first, an adopter restores that
    /// transaction, which sends the response again until the caller acknowledges it. An
    /// unstored one goes at once.
    pub(super) fn wind_down(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.version == 0 || call.state == CallState::Confirmed {
            return self.remove_call(s, id, now);
        }
        call.b_invite = None;
        call.state = CallState::Cancelling;
        call.cancelled_at.get_or_insert(now);
        if !self.settle_if_done(s, id, now) {
            // An adopter must neither wait for the callee's answer nor miss the caller's.
            self.persist(s, id);
        }
    }

    /// A failed stored call goes once the caller's and the callee's INVITE transactions
    /// both have ended (see [`B2bua::wind_down`]). Whether it went.
    pub(super) fn settle_if_done(&mut self, s: &mut Sink, id: &str, now: UnixMillis) -> bool {
        let Some(call) = self.calls.get(id) else {
            return false;
        };
        let caller_done = call
            .a_invite
            .as_ref()
            .is_none_or(|(k, _)| s.tx.get(k).is_none());
        let done = call.state == CallState::Cancelling && call.b_invite.is_none() && caller_done;
        if done {
            self.remove_call(s, id, now);
        }
        done
    }

    /// The callee answered: ACK it, and relay the answer to the caller once the call's
    /// record is written (durable before visible: the write goes in the same batch, before
    /// the 200).
    fn on_invite_2xx(
        &mut self,
        s: &mut Sink,
        id: &str,
        resp: Response,
        to_tag: Option<String>,
        now: UnixMillis,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if matches!(call.state, CallState::Confirmed | CallState::Ending) {
            // A retransmission: our ACK was lost (the call may be ending meanwhile: a stored
            // call answered after its caller cancelled stays until the callee's BYE is
            // answered; store-leader-change-during-takeover seed 18 relayed the copy).
            let cseq = resp
                .headers
                .get("CSeq")
                .and_then(CSeq::parse)
                .map_or(call.b.local_cseq.max(1), |c| c.seq);
            return self.ack_b(s, id, cseq);
        }
        call.b.remote_tag = to_tag;
        if let Some(c) = resp.headers.get("Contact") {
            call.b.remote_target = uri_of(c);
        }
        let mut rr: Vec<String> = resp
            .headers
            .get_all("Record-Route")
            .map(str::to_string)
            .collect();
        rr.reverse();
        call.b.route_set = rr;
        let b_cseq = call.b.local_cseq;
        if call.state == CallState::Cancelling {
            // Answered after the caller cancelled: ACK and hang up the callee.
            self.ack_b(s, id, b_cseq);
            if let Some(c) = self.calls.get_mut(id) {
                c.a.remote_tag = None;
            }
            return self.end_call(s, id, now);
        }
        self.ack_b(s, id, b_cseq);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some((akey, areq)) = call.a_invite.take() else {
            return;
        };
        let mut out = response_to(&areq, resp.code, Some(&resp.reason), &call.a.local_tag);
        echo_record_route(&areq, &mut out);
        out.headers
            .push("Contact", s.contact(call.a.peer.transport, id));
        if let Some(se) = resp.headers.get("Session-Expires") {
            out.headers.push("Session-Expires", se);
            if let Some(secs) = session_expires(Some(se)) {
                call.session_interval = secs;
            }
        }
        copy_body(&resp.headers, &resp.body, &mut out.headers, &mut out.body);
        let a_cseq = call.a.remote_cseq.unwrap_or(0);
        call.state = CallState::Confirmed;
        call.answered_at = Some(now);
        call.refreshed_at = now;
        call.pending_2xx = Some(Pending2xx {
            side: Side::A,
            response: out.clone(),
            cseq: a_cseq,
            first_sent_at: now,
            last_sent_at: now,
            retransmits: 0,
        });
        self.calls.answered(&akey);
        s.metrics.calls_answered += 1;
        self.persist(s, id);
        s.respond(&akey, out, now);
    }

    /// The INVITE to the callee timed out or could not be delivered: the caller gets
    /// `code`, unless the call was already answered or given up.
    pub(super) fn invite_failed(&mut self, s: &mut Sink, id: &str, code: u16, now: UnixMillis) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        if call.state == CallState::Early {
            if let Some((akey, areq)) = call.a_invite.clone() {
                let out = response_to(&areq, code, None, &call.a.local_tag);
                s.respond(&akey, out, now);
            }
            s.metrics.calls_failed += 1;
        }
        if self
            .calls
            .get(id)
            .is_some_and(|c| c.state != CallState::Confirmed)
        {
            self.wind_down(s, id, now);
        }
    }
}

/// Where an INVITE to the callee at `peer` (and its CANCEL) goes: to the first of its
/// preloaded Routes (the Path the callee registered through), else as
/// [`super::first_hop`] says.
/// A response that makes a dialog with the caller (its 1xx with our tag, its 2xx) echoes the
/// INVITE's Record-Route (RFC 3261 §12.1.1), so that the caller routes its requests in the
/// dialog through the proxies that asked to stay on the path (a balancer holding the
/// caller's connection, `lb::flow`).
fn echo_record_route(areq: &Request, out: &mut Response) {
    for rr in areq.headers.get_all("Record-Route") {
        out.headers.push("Record-Route", rr);
    }
}

fn invite_hop(s: &Sink, invite: &Request, peer: Peer) -> Peer {
    invite
        .headers
        .get("Route")
        .and_then(|r| crate::dialog::peer_for_uri(&uri_of(r)))
        .unwrap_or_else(|| super::first_hop(s, peer))
}
