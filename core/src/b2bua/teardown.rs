//! Ending a call: BYE on the legs that have a dialog, the record kept (`Ending`) until
//! they answer, then removed; and the call timers that end calls (no ACK, session expiry,
//! maximum duration) or give up ringing (Timer C).

use super::call::{CallState, CallTimer, Side};
use super::calls::Purpose;
use super::B2bua;
use crate::message::{response_to, Method, Response, SipMessage};
use crate::sink::Sink;
use crate::store::StoreWrite;
use crate::transaction::TxKey;
use crate::UnixMillis;

impl B2bua {
    /// Forgets a call with every index of it; a stored one leaves a tombstone for 64·T1.
    pub(super) fn remove_call(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        self.terminate_relays(s, id, now);
        let Some(call) = self.calls.remove(id, &s.cfg.timers) else {
            return;
        };
        let until = now + 64 * s.cfg.timers.t1;
        if call.bye_owed {
            self.calls.remember_ended(&call, until, now);
        }
        if call.version > 0 {
            // A party's BYE may be sent again after our 200 was lost: any node, this one
            // restarted included, answers it 200 for a while.
            s.writes.extend(super::tombstone::Tombstone::writes(
                &call,
                until,
                s.clustered,
            ));
            if s.clustered {
                s.writes.push(StoreWrite::Delete {
                    key: crate::store::owns_key(call.owner, id),
                    expect: 1,
                });
            }
        }
    }

    /// Sends BYE on every leg that has a dialog. A stored call then stays, as `Ending`,
    /// until those BYEs are answered (the write goes before them); an unstored one is
    /// forgotten at once.
    pub(crate) fn end_call(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let sides: Vec<Side> = [Side::A, Side::B]
            .into_iter()
            .filter(|side| call.dialog(*side).remote_tag.is_some())
            .collect();
        if sides.is_empty() || call.version == 0 {
            self.send_byes(s, id, &sides, now);
            return self.remove_call(s, id, now);
        }
        call.state = CallState::Ending;
        call.byes = sides.clone();
        call.awaiting_ack = None;
        self.terminate_relays(s, id, now);
        self.send_byes(s, id, &sides, now);
        self.persist(s, id);
        self.calls.reschedule(id, &s.cfg.timers);
    }

    /// §15.1.2: requests still pending in a dialog that ends get 487, so that no
    /// transaction is left without a final response.
    fn terminate_relays(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let answers: Vec<(TxKey, Response)> = std::mem::take(&mut call.relays)
            .into_iter()
            .map(|(_, relay)| {
                let tag = &call.dialog(relay.from_side).local_tag;
                let resp = response_to(&relay.request, 487, None, tag);
                (relay.server, resp)
            })
            .collect();
        for (key, resp) in answers {
            s.respond(&key, resp, now);
        }
    }

    /// Sends BYE on `sides` (each with a new CSeq, which the caller stores first).
    pub(super) fn send_byes(&mut self, s: &mut Sink, id: &str, sides: &[Side], now: UnixMillis) {
        for side in sides {
            let Some(call) = self.calls.get(id) else {
                return;
            };
            let hop = super::hop_on(s, call.dialog(*side));
            let via = s.via(hop.transport);
            let contact = s.contact(hop.transport, id);
            let Some(call) = self.calls.get_mut(id) else {
                return;
            };
            let bye = call
                .dialog_mut(*side)
                .request(Method::Bye, &via, &contact, 70);
            self.send(s, id, bye, hop, Purpose::Bye(*side), now);
        }
    }

    /// The BYE on `side` was answered (or timed out): once every leg has answered, the
    /// call's record goes.
    pub(super) fn bye_done(&mut self, s: &mut Sink, id: &str, side: Side, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.state != CallState::Ending {
            return;
        }
        call.byes.retain(|b| *b != side);
        if call.byes.is_empty() {
            self.remove_call(s, id, now);
        }
    }

    /// Fires the due timer of call `id` and re-derives its next deadline.
    pub(crate) fn fire_timer(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        self.call_timer(s, id, now);
        self.calls.reschedule(id, &s.cfg.timers);
    }

    fn call_timer(&mut self, s: &mut Sink, id: &str, now: UnixMillis) {
        let t = s.cfg.timers;
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some((_, timer)) = call.deadline(&t) else {
            return;
        };
        match timer {
            CallTimer::Retransmit2xx => {
                let (a, b) = (call.a.peer, call.b.peer);
                if let Some(p) = call.pending_2xx.as_mut() {
                    p.retransmits += 1;
                    p.last_sent_at = now;
                    let to = p.destination(if p.side == Side::A { a } else { b });
                    let msg = SipMessage::Response(p.response.clone());
                    s.resend_stateless(&msg, to);
                }
            }
            CallTimer::AckTimeout => {
                // §13.3.1.4: no ACK within 64·T1: the session is over.
                call.pending_2xx = None;
                if let Some((side, _, sent_cseq)) = call.awaiting_ack.take() {
                    let other = side.other();
                    let hop = super::hop_on(s, call.dialog(other));
                    let via = s.via(hop.transport);
                    let ack =
                        call.dialog(other)
                            .request_with_cseq(Method::Ack, sent_cseq, &via, "", 70);
                    s.send_stateless(&SipMessage::Request(ack), hop);
                }
                self.end_call(s, id, now);
            }
            CallTimer::SessionExpired | CallTimer::MaxDuration => self.end_call(s, id, now),
            CallTimer::NoAnswer if call.state == CallState::Cancelling => {
                // The callee's answer to our CANCEL never came (or came to a node that
                // died): waited for no longer.
                if let Some((k, _)) = call.b_invite.take() {
                    s.tx.abandon(&k);
                }
                if let Some((k, _)) = call.a_invite.take() {
                    s.tx.abandon(&k);
                }
                self.settle_if_done(s, id, now);
            }
            CallTimer::NoAnswer => self.give_up_ringing(s, id, 408, now),
        }
    }
}
