//! What the user does: registering and refreshing, calling, answering, rejecting,
//! cancelling, re-INVITEs and in-dialog requests, hanging up or going silent, all drawn
//! from the seeded generator.

use super::*;

impl Ua {
    /// A new request in call `call_id`'s dialog, with the next local CSeq.
    pub(super) fn dialog_request(&mut self, call_id: &str, method: Method) -> Option<Request> {
        let c = self.calls.get_mut(call_id)?;
        c.local_cseq += 1;
        let cseq = c.local_cseq;
        self.request_in_dialog(call_id, method, cseq)
    }

    /// A request in call `call_id`'s dialog with CSeq `cseq` (an ACK takes its INVITE's).
    pub(super) fn request_in_dialog(
        &mut self,
        call_id: &str,
        method: Method,
        cseq: u32,
    ) -> Option<Request> {
        let c = self.calls.get(call_id)?;
        let (uri, local, remote, local_tag, remote_tag) = (
            c.remote_target.clone(),
            c.local_uri.clone(),
            c.remote_uri.clone(),
            c.local_tag.clone(),
            c.remote_tag.clone().unwrap_or_default(),
        );
        let mut r = self.base_request(method.clone(), &uri);
        r.headers.push("From", format!("{local};tag={local_tag}"));
        r.headers.push("To", format!("{remote};tag={remote_tag}"));
        r.headers.push("Call-ID", call_id);
        r.headers.push("CSeq", format!("{cseq} {method}"));
        Some(r)
    }

    pub(super) fn on_command(&mut self, cmd: Command) {
        let Command::Call { callee, token } = cmd;
        let now = now_ms();
        let uri = format!("sip:{callee}@{}", self.cfg.home);
        let mut r = self.base_request(Method::Invite, &uri);
        let call_id = self.ids.call_id();
        let local_tag = self.ids.tag();
        let local_uri = format!("<sip:{}@drongo>", self.cfg.user);
        let remote_uri = format!("<sip:{callee}@drongo>");
        r.headers
            .push("From", format!("{local_uri};tag={local_tag}"));
        r.headers.push("To", remote_uri.clone());
        r.headers.push("Call-ID", call_id.clone());
        r.headers.push("CSeq", "1 INVITE");
        r.headers
            .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp(&self.cfg, &token, 1);
        self.ledger.call(&token, |c| {
            c.caller = Leg {
                ua: self.who.clone(),
                ..Leg::default()
            };
            c.callee_user = callee.clone();
            c.invited_at = now;
        });
        self.ledger.lock().counts.calls_attempted += 1;
        self.trace.log(
            &self.who,
            format_args!("calls {callee} (call {token}, Call-ID {call_id})"),
        );
        self.calls.insert(
            call_id.clone(),
            Call {
                token,
                caller: true,
                local_tag,
                local_uri,
                remote_uri,
                remote_target: uri,
                local_cseq: 1,
                invite: Some(r.clone()),
                ..Call::default()
            },
        );
        let patience = self.between(self.cfg.patience_ms.0, self.cfg.patience_ms.1);
        self.at(now + patience, Action::Cancel(call_id.clone()));
        self.send_request(r, Purpose::Invite(call_id));
    }

    pub(super) fn on_action(&mut self, action: Action, now: UnixMillis) {
        match action {
            Action::Register => {
                if self.cfg.lapse_at_ms.is_some_and(|t| sim_ms() >= t) {
                    self.trace
                        .log(&self.who, "stops refreshing its registration");
                    return;
                }
                self.register(false);
            }
            Action::Deregister => {
                let star = self.reg.cseq.is_multiple_of(2);
                self.deregister(star);
            }
            Action::Probe => {
                self.register(true);
                let next = self.between(10_000, 20_000);
                self.at(now + next, Action::Probe);
            }
            Action::Answer(id) => self.answer(&id, now),
            Action::AnswerReinvite(id) => {
                let confirmed = self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.state == State::Confirmed);
                if let Some((key, req)) = self.take_held_reinvite(&id) {
                    if confirmed {
                        self.answer_reinvite(&id, key, req, now);
                    } else {
                        let tag = self.calls.get(&id).map(|c| c.local_tag.clone());
                        let r = response_to(&req, 487, None, &tag.unwrap_or_default());
                        let _ = self.tx.send_response(&key, r, now);
                    }
                }
            }
            Action::Reject(id, code) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Early || c.canceled {
                    return;
                }
                c.state = State::Ended;
                let Some((key, req)) = c.server_invite.clone() else {
                    return;
                };
                let tag = c.local_tag.clone();
                let _ = self
                    .tx
                    .send_response(&key, response_to(&req, code, None, &tag), now);
            }
            Action::Cancel(id) => self.cancel(&id, now),
            Action::Abandon(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Early {
                    return;
                }
                c.state = State::Ended;
                let token = c.token.clone();
                let Some(invite) = c.invite.clone() else {
                    return;
                };
                self.trace.log(
                    &self.who,
                    format_args!("no final response after CANCEL; {id} given up"),
                );
                let what = format!(
                    "{}: INVITE {id} got no final response, 64·T1 after its CANCEL",
                    self.who
                );
                self.ledger.lock().unanswered.push((token, what));
                self.tx.abandon_request(&invite);
            }
            Action::Hangup(id) => self.hang_up(&id),
            Action::Reinvite(id) => {
                let Some(c) = self.calls.get(&id) else { return };
                if c.state != State::Confirmed
                    || c.vanished
                    || c.reinvite_pending
                    || c.pending_2xx.is_some()
                {
                    return;
                }
                let token = c.token.clone();
                let Some(mut r) = self.dialog_request(&id, Method::Invite) else {
                    return;
                };
                r.headers
                    .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
                r.headers.push("Content-Type", "application/sdp");
                r.body = sdp(&self.cfg, &token, 2);
                if let Some(c) = self.calls.get_mut(&id) {
                    c.reinvite_pending = true;
                }
                self.ledger.call(&token, |c| c.reinvites_pending += 1);
                self.ledger.lock().counts.reinvites += 1;
                self.send_request(r, Purpose::Reinvite(id));
            }
            Action::Info(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Confirmed || c.vanished {
                    return;
                }
                c.infos += 1;
                c.reinvite_overtaken |= c.reinvite_pending;
                let info_id = format!("{} {} {}", c.token, self.who, c.infos);
                let Some(mut r) = self.dialog_request(&id, Method::Info) else {
                    return;
                };
                r.headers.push("Content-Type", "application/x-drongo-sim");
                r.body = info_id.clone().into_bytes();
                self.ledger.lock().counts.infos += 1;
                self.send_request(r, Purpose::Info(id, info_id));
            }
            Action::Vanish(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.state != State::Confirmed {
                    return;
                }
                c.vanished = true;
                let (token, caller, leg) = (c.token.clone(), c.caller, c.leg);
                self.trace
                    .log(&self.who, format_args!("goes silent in {id}"));
                let at = sim_ms();
                self.ledger_leg(&token, caller, leg, |l| {
                    l.vanished = true;
                    l.vanished_at = Some(at);
                });
            }
            Action::Failover(key) => self.fail_over(&key, "no answer"),
            Action::Resend2xx(id) => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.vanished {
                    return;
                }
                let Some(p) = c.pending_2xx.as_mut() else {
                    return;
                };
                if now >= p.give_up_at {
                    // §13.3.1.4: no ACK for our 2xx: the dialog is ended with BYE.
                    // The 2xx made the dialog, ACKed or not.
                    c.pending_2xx = None;
                    c.state = State::Confirmed;
                    self.trace
                        .log(&self.who, format_args!("no ACK for 2xx in {id}; BYE"));
                    // Drongo owed the ACK (its own for the callee's 2xx to the INVITE, the
                    // caller's relayed for a re-INVITE's): the call is lost unless it was
                    // ending anyway (see `continuity`).
                    self.suspect(&id, false, "2xx got no ACK in 64·T1");
                    self.hang_up(&id);
                    return;
                }
                let (key, resp) = (p.key.clone(), p.response.clone());
                p.interval = (p.interval * 2).min(self.timers_cfg.t2);
                let next = now + p.interval;
                if !c.caller && c.state == State::Early {
                    let (token, leg) = (c.token.clone(), c.leg);
                    self.ledger_leg(&token, false, leg, |l| l.unacked_copies += 1);
                }
                let _ = self.tx.send_response(&key, resp, now);
                self.at(next, Action::Resend2xx(id));
            }
        }
    }

    pub(super) fn cancel(&mut self, id: &str, now: UnixMillis) {
        let t1 = self.timers_cfg.t1;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if c.state != State::Early || c.canceled {
            return;
        }
        if !c.provisional {
            // §9.1: no CANCEL before a provisional response; it goes when one comes.
            c.cancel_wanted = true;
            return;
        }
        c.canceled = true;
        let Some(invite) = c.invite.clone() else {
            return;
        };
        let cancel = drongo_core::message::cancel_for(&invite);
        let token = c.token.clone();
        self.ledger.call(&token, |l| {
            l.cancelled_at.get_or_insert(sim_ms());
        });
        self.trace
            .log(&self.who, format_args!("gives up on {id}: CANCEL"));
        if !self.cfg.swallow_cancel {
            self.send_request(cancel, Purpose::Cancel);
        }
        self.at(now + 64 * t1, Action::Abandon(id.to_string()));
    }

    /// Sends BYE; the leg ends when the BYE's transaction does (`on_bye_answer`).
    pub(super) fn hang_up(&mut self, id: &str) {
        let Some(c) = self.calls.get(id) else { return };
        if c.state != State::Confirmed || c.vanished {
            return;
        }
        let Some(r) = self.dialog_request(id, Method::Bye) else {
            return;
        };
        // §15.1.2: a re-INVITE we have not answered yet gets 487 before our BYE.
        self.refuse_held_reinvite(id, 487, now_ms());
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.state = State::Closing;
        c.pending_2xx = None;
        let (token, caller, leg) = (c.token.clone(), c.caller, c.leg);
        let at = sim_ms();
        self.ledger_leg(&token, caller, leg, |l| {
            l.bye_sent_at.get_or_insert(at);
        });
        self.ledger.lock().counts.byes += 1;
        self.send_request(r, Purpose::Bye(id.to_string()));
    }

    /// The final answer to our BYE (408 for none at all). A 481 or 408 on a call Drongo
    /// confirmed means it lost the call, unless the call was ending anyway (checked at the
    /// end of the run); a 5xx is tried again a few times.
    pub(super) fn on_bye_answer(&mut self, id: &str, code: u16, now: UnixMillis) {
        match code {
            200..=299 => {}
            481 | 408 => self.suspect(id, true, format_args!("BYE answered {code}")),
            500..=599 => {
                let Some(c) = self.calls.get_mut(id) else {
                    return;
                };
                if c.state == State::Closing && c.bye_retries < 3 {
                    c.bye_retries += 1;
                    c.state = State::Confirmed;
                    self.at(now + 2_000, Action::Hangup(id.to_string()));
                    return;
                }
                self.suspect(id, true, format_args!("BYE answered {code}, three times"));
            }
            _ => self.violation(format_args!("BYE in {id} answered {code}")),
        }
        self.end_leg(id);
    }

    /// Records an in-dialog request of a confirmed call that got no 2xx (see `Suspect`).
    pub(super) fn suspect(&mut self, id: &str, bye: bool, what: impl std::fmt::Display) {
        let Some(c) = self.calls.get(id) else { return };
        let s = crate::ledger::Suspect {
            at: sim_ms(),
            caller: c.caller,
            leg: c.leg,
            bye,
            what: format!("{}: {what} in {id}", self.who),
        };
        self.ledger.call(&c.token, |l| l.suspects.push(s));
    }

    /// This user agent is done with the dialog.
    pub(super) fn end_leg(&mut self, id: &str) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.state = State::Ended;
        c.pending_2xx = None;
        let (token, caller, leg) = (c.token.clone(), c.caller, c.leg);
        self.ledger_leg(&token, caller, leg, |l| l.ended = true);
    }

    pub(super) fn answer(&mut self, id: &str, now: UnixMillis) {
        let contact = format!("<{}>", contact_uri(&self.cfg));
        let cfg = self.cfg.clone();
        let t1 = self.timers_cfg.t1;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if c.state != State::Early || c.canceled {
            return;
        }
        let Some((key, req)) = c.server_invite.clone() else {
            return;
        };
        let mut resp = response_to(&req, 200, None, &c.local_tag);
        resp.headers.push("Contact", contact);
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = sdp(&cfg, &c.token, 1);
        let cseq = c.remote_cseq.unwrap_or(0);
        c.sent_2xx = true;
        c.pending_2xx = Some(Pending2xx {
            key: key.clone(),
            response: resp.clone(),
            cseq,
            interval: t1,
            give_up_at: now + 64 * t1,
        });
        let (token, leg) = (c.token.clone(), c.leg);
        let lossy = cfg.link.loss > 0.0;
        self.ledger.call(&token, |l| {
            if let Some(leg) = l.callees.get_mut(leg) {
                leg.answered = true;
                leg.lossy = lossy;
            }
            l.callee_answered_at.get_or_insert(sim_ms());
        });
        if self.tx.send_response(&key, resp, now).is_err() {
            self.violation(format_args!("cannot answer {id}: INVITE transaction gone"));
        }
        self.at(now + t1, Action::Resend2xx(id.to_string()));
    }

    /// Plans what this side does in a confirmed call: hang up, maybe re-INVITE first,
    /// maybe go silent.
    pub(super) fn plan_confirmed(&mut self, id: &str, now: UnixMillis) {
        let hold = self.between(1_000, 25_000);
        self.at(now + hold, Action::Hangup(id.to_string()));
        if self.chance(0.3) {
            let at = self.between(200, hold);
            self.at(now + at, Action::Reinvite(id.to_string()));
        }
        // In-dialog requests all through the call: they cross faults, and each must get
        // its 2xx from the other party while the call is up.
        for _ in 0..self.between(0, 2) {
            let at = self.between(100, hold);
            self.at(now + at, Action::Info(id.to_string()));
        }
        if self.chance(self.cfg.vanish) {
            let at = self.between(0, hold);
            self.at(now + at, Action::Vanish(id.to_string()));
        }
    }

    // ----- what arrives -----

    pub(super) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.next_u64() % (hi - lo + 1)
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        ((self.rng.next_u64() % 1_000_000) as f64) < p * 1_000_000.0
    }

    pub(super) fn at(&mut self, when: UnixMillis, action: Action) {
        self.seq += 1;
        self.timers.insert((when, self.seq), action);
    }
}
