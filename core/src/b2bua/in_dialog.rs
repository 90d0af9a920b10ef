//! Requests inside a call's dialogs: relayed from one leg to the other with that leg's
//! dialog, their answers relayed back, and ACKs.

use super::call::{CallState, Pending2xx, Relay, Side};
use super::calls::Purpose;
use super::wire::{copy_body, cseq_of, max_forwards};
use super::B2bua;
use crate::dialog::uri_of;
use crate::message::{header_param, response_to, CSeq, Method, Request, Response, SipMessage};
use crate::sink::Sink;
use crate::transaction::TxKey;
use crate::UnixMillis;

impl B2bua {
    /// The call and leg of an in-dialog request (by its Call-ID and our To tag).
    pub(crate) fn dialog_of(&self, call_id: &str, local_tag: &str) -> Option<(String, Side)> {
        self.calls.by_dialog(call_id, local_tag)
    }

    /// The 2xx an INVITE on a dialog we no longer hold was answered, if its call ended with
    /// that 2xx still retransmitted: a retransmission of the INVITE gets it again.
    /// The owed 2xx of INVITE `req` was sent again at `now` (see `Calls::orphan_copied`).
    pub(crate) fn owed_2xx_sent(&mut self, s: &Sink, req: &Request, now: UnixMillis) {
        if let Some(call_id) = req.headers.get("Call-ID") {
            self.calls
                .orphan_copied(call_id, cseq_of(req), now, &s.cfg.timers);
        }
    }

    pub(crate) fn owed_2xx(&self, req: &Request) -> Option<Response> {
        if req.method != Method::Invite {
            return None;
        }
        let call_id = req.headers.get("Call-ID")?;
        self.calls.orphan_2xx(call_id, cseq_of(req)).cloned()
    }

    /// Whether `req`, on leg `side` of call `id`, is the INVITE whose 2xx the call holds
    /// (and retransmits until the ACK).
    pub(crate) fn holds_2xx_for(&self, id: &str, side: Side, req: &Request) -> bool {
        req.method == Method::Invite
            && self
                .calls
                .get(id)
                .and_then(|c| c.pending_2xx.as_ref())
                .is_some_and(|p| p.side == side && p.cseq == cseq_of(req))
    }

    /// Whether a BYE on a dialog we no longer hold is the retransmission of one that ended
    /// its call while the store failed (its 200 was withdrawn): it gets 200 then.
    pub(crate) fn bye_owed(&self, call_id: &str, local_tag: &str, now: UnixMillis) -> bool {
        self.calls.was_ended(call_id, local_tag, now)
    }

    /// A request on leg `side` of call `id`.
    pub(crate) fn in_dialog(
        &mut self,
        s: &mut Sink,
        id: &str,
        side: Side,
        key: TxKey,
        req: Request,
        now: UnixMillis,
    ) {
        if self.calls.is_contested(id) {
            // Unanswered until the read-back says whose the call is: the transaction is
            // dropped, so the sender's retransmission reaches us afresh.
            return s.tx.abandon(&key);
        }
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let cseq = cseq_of(&req);
        // A retransmission of the INVITE whose 2xx we hold (its transaction was lost with a
        // node that restarted from the store): it gets that 2xx, whose own retransmissions
        // go on until the ACK (§13.3.1.4). It is no out-of-order request.
        if let Some(p) = call
            .pending_2xx
            .as_mut()
            .filter(|p| req.method == Method::Invite && p.side == side && p.cseq == cseq)
        {
            if now < p.last_sent_at + s.cfg.timers.t1 / 2 {
                // A copy left moments ago: this retransmission is absorbed (its transaction
                // dropped, so that the next one reaches us afresh).
                return s.tx.abandon(&key);
            }
            // This answer is a copy like the timer's: the next one is due an interval on.
            p.last_sent_at = now;
            let ok = p.response.clone();
            s.respond_copy(&key, ok, &req, now);
            return self.calls.reschedule(id, &s.cfg.timers);
        }
        if call.state == CallState::Ending {
            // The call is over; only the BYE that crosses ours is welcome.
            if req.method == Method::Bye {
                s.reply(&key, &req, 200, None, &[], now);
                return self.bye_done(s, id, side, now);
            }
            return s.reply(&key, &req, 481, None, &[], now);
        }
        let d = call.dialog_mut(side);
        if d.remote_cseq.is_some_and(|rc| cseq <= rc) {
            // §14.1: a random 0–10 s, from the node's seeded generator.
            let wait = s.ids.below(11).to_string();
            let h = [("Retry-After", wait)];
            return s.reply(&key, &req, 500, Some("Out Of Order"), &h, now);
        }
        d.remote_cseq = Some(cseq);
        if matches!(req.method, Method::Invite | Method::Update) {
            if let Some(c) = req.headers.get("Contact") {
                d.remote_target = uri_of(c);
            }
        }
        if req.method == Method::Bye {
            s.reply(&key, &req, 200, None, &[], now);
            if call.state == CallState::Early {
                self.give_up_ringing(s, id, 487, now);
                return self.remove_call(s, id, now);
            }
            // Only the other leg gets our BYE.
            call.dialog_mut(side).remote_tag = None;
            return self.end_call(s, id, now);
        }
        let busy = call.state != CallState::Confirmed
            || (req.method == Method::Invite
                && (call.awaiting_ack.is_some()
                    || call.pending_2xx.is_some()
                    || call
                        .relays
                        .iter()
                        .any(|(_, r)| r.request.method == Method::Invite)));
        if busy {
            return s.reply(&key, &req, 491, None, &[], now);
        }
        self.relay(s, id, side, key, req, now);
    }

    /// Relays a request from leg `side` to the other leg, with that leg's dialog.
    fn relay(
        &mut self,
        s: &mut Sink,
        id: &str,
        side: Side,
        key: TxKey,
        req: Request,
        now: UnixMillis,
    ) {
        let other = side.other();
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let hop = super::hop_on(s, call.dialog(other));
        let via = s.via(hop.transport);
        let contact = s.contact(hop.transport, id);
        let mf = max_forwards(&req).saturating_sub(1);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let mut out = call
            .dialog_mut(other)
            .request(req.method.clone(), &via, &contact, mf);
        for name in ["Session-Expires", "Min-SE", "Supported", "Require", "Event"] {
            for v in req.headers.get_all(name) {
                out.headers.push(name, v);
            }
        }
        copy_body(&req.headers, &req.body, &mut out.headers, &mut out.body);
        let sent_cseq = call.dialog(other).local_cseq;
        let relay = Relay {
            server: key,
            from_side: side,
            request: req,
            sent_cseq,
        };
        if let Some(ckey) = self.send(s, id, out, hop, Purpose::Relay, now) {
            if let Some(call) = self.calls.get_mut(id) {
                call.relays.push((ckey, relay));
            }
        }
        // The new CSeq (and, with distributed transactions, the relay) must be durable
        // before the request carrying it leaves: the write goes in the request's batch.
        self.persist(s, id);
    }

    /// The answer to a relayed request, relayed back.
    pub(super) fn on_relay_response(
        &mut self,
        s: &mut Sink,
        id: &str,
        ckey: &TxKey,
        resp: Response,
        now: UnixMillis,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some(pos) = call.relays.iter().position(|(k, _)| k == ckey) else {
            return;
        };
        let relay = call.relays[pos].1.clone();
        let code = resp.code;
        if code == 100 {
            return;
        }
        let is_invite = relay.request.method == Method::Invite;
        let mut out = response_to(&relay.request, code, Some(&resp.reason), "");
        if (200..300).contains(&code)
            && matches!(relay.request.method, Method::Invite | Method::Update)
        {
            let t = call.dialog(relay.from_side).peer.transport;
            out.headers.push("Contact", s.contact(t, id));
            if let Some(se) = resp.headers.get("Session-Expires") {
                out.headers.push("Session-Expires", se);
            }
            call.refreshed_at = now;
            if let Some(c) = resp.headers.get("Contact") {
                call.dialog_mut(relay.from_side.other()).remote_target = uri_of(c);
            }
        }
        copy_body(&resp.headers, &resp.body, &mut out.headers, &mut out.body);
        if code >= 200 {
            call.relays.remove(pos);
            if is_invite && (200..300).contains(&code) {
                let recv_cseq = cseq_of(&relay.request);
                call.awaiting_ack = Some((relay.from_side, recv_cseq, relay.sent_cseq));
                call.pending_2xx = Some(Pending2xx {
                    side: relay.from_side,
                    response: out.clone(),
                    cseq: recv_cseq,
                    first_sent_at: now,
                    last_sent_at: now,
                    retransmits: 0,
                });
            }
            if (200..300).contains(&code) || super::stores_relays(s) {
                self.persist(s, id);
            }
        }
        s.respond(&relay.server, out, now);
    }

    /// A relayed request timed out or could not be delivered: its sender gets `code`.
    pub(super) fn relay_failed(
        &mut self,
        s: &mut Sink,
        id: &str,
        key: &TxKey,
        code: u16,
        now: UnixMillis,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if let Some(pos) = call.relays.iter().position(|(k, _)| k == key) {
            let relay = call.relays.remove(pos).1;
            if super::stores_relays(s) {
                self.persist(s, id);
            }
            let out = response_to(&relay.request, code, None, "");
            s.respond(&relay.server, out, now);
        }
    }

    /// An ACK: for an orphaned 2xx, for a 2xx we relayed (then relayed on to the other
    /// leg, which waits for it), or for the caller's 2xx.
    pub(crate) fn on_ack(&mut self, s: &mut Sink, ack: Request) {
        let h = &ack.headers;
        let (Some(call_id), Some(tag), Some(cseq)) = (
            h.get("Call-ID"),
            h.get("To").and_then(|t| header_param(t, "tag")),
            h.get("CSeq").and_then(CSeq::parse),
        ) else {
            return;
        };
        if self.calls.ack_orphan(call_id, cseq.seq) {
            return;
        }
        let Some((id, side)) = self.calls.by_dialog(call_id, tag) else {
            return;
        };
        if self.calls.is_contested(&id) {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .pending_2xx
            .as_ref()
            .is_some_and(|p| p.side == side && p.cseq == cseq.seq)
        {
            call.pending_2xx = None;
        }
        if let Some((wait_side, recv_cseq, sent_cseq)) = call.awaiting_ack {
            if wait_side == side && recv_cseq == cseq.seq {
                call.awaiting_ack = None;
                // Relayed to the leg whose 2xx it acknowledges, with its body.
                if let Some((mut out, hop)) = self.ack_on(s, &id, side.other(), sent_cseq) {
                    copy_body(&ack.headers, &ack.body, &mut out.headers, &mut out.body);
                    s.send_stateless(&SipMessage::Request(out), hop);
                }
            }
        }
        self.calls.reschedule(&id, &s.cfg.timers);
    }

    /// A 2xx to our INVITE after its transaction ended: our ACK was lost, send it again.
    pub(crate) fn on_stray_response(&mut self, s: &mut Sink, resp: Response) {
        let h = &resp.headers;
        let is_invite_2xx = (200..300).contains(&resp.code)
            && h.get("CSeq")
                .and_then(CSeq::parse)
                .is_some_and(|c| c.method == Method::Invite);
        if !is_invite_2xx {
            return;
        }
        let (Some(call_id), Some(tag), Some(cseq)) = (
            h.get("Call-ID"),
            h.get("From").and_then(|f| header_param(f, "tag")),
            h.get("CSeq").and_then(CSeq::parse),
        ) else {
            return;
        };
        if let Some((id, Side::B)) = self.calls.by_dialog(call_id, tag) {
            self.ack_b(s, &id, cseq.seq);
        }
    }
}
