//! The SIP side of the user agent: what it does with each request, response and
//! transaction event that arrives.

use super::*;

impl Ua {
    pub(super) fn on_arrival(&mut self, a: Arrival) {
        let now = now_ms();
        self.trace.log(
            &self.who,
            format_args!("< {} {}", a.from, summary(&a.bytes)),
        );
        if self.ledger.must_be_silent(a.from.ip(), sim_ms()) {
            self.violation(format_args!(
                "{} sent {} while cut off from the store past its lease (fence)",
                a.from,
                first_line(&a.bytes)
            ));
        }
        let msg = match parse_and_validate(&a.bytes, &self.limits) {
            Ok(m) => m,
            Err(e) => {
                self.violation(format_args!(
                    "Drongo sent a message we cannot accept ({e:?}): {}",
                    first_line(&a.bytes)
                ));
                return;
            }
        };
        if self.cfg.lose_adopter_acks && self.is_adopters_ack(&msg, a.from) {
            return self.trace.log(&self.who, "mutant drops an adopter's ACK");
        }
        match &msg {
            SipMessage::Response(r) => self.check_response(r, a.duplicate, a.from),
            SipMessage::Request(r) => self.check_request(r, a.duplicate),
        }
        self.follow(&msg, a.from);
        self.tx.handle_message(
            msg,
            Peer {
                transport: Transport::Udp,
                addr: a.from,
            },
            now,
        );
    }

    /// In a cluster the node that speaks for a call (its requests in the dialog, its 2xx
    /// retransmissions) is the one that holds it now: the call's later requests and ACKs
    /// go there, as they would to a balancer that routes by the node's token.
    fn follow(&mut self, msg: &SipMessage, from: SocketAddr) {
        if self.cfg.failover_ms.is_none() {
            return;
        }
        let Some(i) = self.cfg.proxies.iter().position(|p| *p == from) else {
            return;
        };
        let h = match msg {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        };
        if let Some(c) = h.get("Call-ID").and_then(|id| self.calls.get_mut(id)) {
            c.proxy = i;
        }
    }

    pub(super) fn on_event(&mut self, e: TxEvent) {
        let now = now_ms();
        match e {
            TxEvent::Request { key, request, .. } => self.on_request(key, request, now),
            TxEvent::Response { key, response } => {
                if !self.copy_response(&key, &response, now) {
                    return;
                }
                let purpose = self.purposes.get(&key).cloned();
                if key.method == Method::Invite {
                    let id = format!("{} {}", self.who, key.branch);
                    let token = match &purpose {
                        Some(Purpose::Invite(c) | Purpose::Reinvite(c)) => {
                            self.calls.get(c).map(|c| c.token.clone())
                        }
                        _ => None,
                    };
                    let initial = matches!(purpose, Some(Purpose::Invite(_)));
                    let mut l = self.ledger.lock();
                    if response.code < 200 {
                        let what = format!(
                            "{}: INVITE {} got {} and no final response",
                            self.who,
                            response.headers.get("Call-ID").unwrap_or(""),
                            response.code
                        );
                        let token = token.unwrap_or_default();
                        let entry = (sim_ms(), what, token, initial);
                        l.proceeding.entry(id).or_insert(entry);
                    } else {
                        l.proceeding.remove(&id);
                    }
                }
                self.on_response(purpose, response, now);
            }
            TxEvent::StrayResponse { response, .. } => {
                // A 2xx retransmission after the INVITE transaction ended: ACK it again.
                self.reack(&response);
            }
            TxEvent::Ack { request, .. } => self.on_ack(&request),
            TxEvent::Timeout { key, .. } | TxEvent::TransportError { key } => {
                if !self.copy_failed(&key, now) {
                    return;
                }
                let purpose = self.purposes.get(&key).cloned();
                self.on_failure(purpose, now);
            }
            TxEvent::Terminated { key } => {
                self.purposes.remove(&key);
                self.copy_ended(&key);
                let id = format!("{} {}", self.who, key.branch);
                self.ledger.lock().proceeding.remove(&id);
            }
        }
    }

    pub(super) fn reack(&mut self, resp: &Response) {
        let h = &resp.headers;
        let cseq = h.get("CSeq").and_then(CSeq::parse);
        let (Some(id), Some(cseq)) = (h.get("Call-ID"), cseq) else {
            return;
        };
        if cseq.method != Method::Invite || !(200..300).contains(&resp.code) {
            return;
        }
        let ack = self.calls.get(id).and_then(|c| {
            if c.vanished {
                None
            } else {
                c.acks.get(&cseq.seq).cloned()
            }
        });
        if let Some(ack) = ack {
            self.tx
                .send_stateless(&SipMessage::Request(ack), self.proxy_of(id), false);
        }
    }

    pub(super) fn on_failure(&mut self, purpose: Option<Purpose>, now: UnixMillis) {
        match purpose {
            Some(Purpose::Register { cseq, .. }) => {
                // No answer: it may have been processed all the same.
                if let Some(latest) = self.reg.pending.remove(&cseq) {
                    self.reg.could_live_until = self.reg.could_live_until.max(latest);
                }
                self.at(now + 5_000, Action::Register);
            }
            Some(Purpose::Invite(id)) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    if c.state == State::Early {
                        c.state = State::Ended;
                        let token = c.token.clone();
                        self.ledger.call(&token, |l| l.final_seen = true);
                    }
                }
            }
            Some(Purpose::Reinvite(id)) => {
                // §12.2.1.2 / §14.1: a timed-out re-INVITE ends the dialog.
                self.reinvite_done(&id, 408);
                self.suspect(&id, false, "re-INVITE got no answer");
                self.hang_up(&id);
            }
            Some(Purpose::Deregister) => {
                // It may have been processed: the binding may live on until its expiry.
                self.reg.deregistering = false;
                self.at(now + 5_000, Action::Deregister);
            }
            Some(Purpose::Info(id, _)) => {
                self.suspect(&id, false, "INFO got no answer");
                self.hang_up(&id);
            }
            Some(Purpose::Bye(id)) => self.on_bye_answer(&id, 408, now),
            _ => {}
        }
    }

    pub(super) fn reinvite_done(&mut self, id: &str, code: u16) {
        if let Some(c) = self.calls.get_mut(id) {
            if c.reinvite_pending {
                c.reinvite_pending = false;
                let overtaken = std::mem::take(&mut c.reinvite_overtaken);
                let token = c.token.clone();
                self.ledger.call(&token, |l| {
                    l.reinvites_pending = l.reinvites_pending.saturating_sub(1);
                    let at = crate::trace::sim_ms();
                    l.reinvite_answers.push((code, at, overtaken));
                });
            }
        }
    }

    pub(super) fn send_ack(&mut self, id: &str, resp: &Response) {
        let Some(c) = self.calls.get(id) else { return };
        let cseq = resp
            .headers
            .get("CSeq")
            .and_then(CSeq::parse)
            .map_or(0, |c| c.seq);
        if let Some(ack) = c.acks.get(&cseq).cloned() {
            self.tx
                .send_stateless(&SipMessage::Request(ack), self.proxy_of(id), false);
            return;
        }
        let Some(ack) = self.request_in_dialog(id, Method::Ack, cseq) else {
            return;
        };
        if let Some(c) = self.calls.get_mut(id) {
            c.acks.insert(cseq, ack.clone());
        }
        self.tx
            .send_stateless(&SipMessage::Request(ack), self.proxy_of(id), false);
    }

    pub(super) fn on_response(
        &mut self,
        purpose: Option<Purpose>,
        resp: Response,
        now: UnixMillis,
    ) {
        let code = resp.code;
        match purpose {
            Some(Purpose::Register {
                requested,
                sent_at,
                cseq,
            }) if code >= 200 => {
                // Answered: a 200 says what the binding is (below); a refusal changed nothing.
                self.reg.pending.remove(&cseq);
                self.on_register_answer(&resp, requested, sent_at, now)
            }
            Some(Purpose::Deregister) if code >= 200 => self.on_deregister_answer(&resp, now),
            Some(Purpose::Probe { sent_at, remote }) if code >= 200 => {
                self.on_probe_answer(&resp, sent_at, remote, now)
            }
            Some(Purpose::Invite(id)) => self.on_invite_response(&id, &resp, now),
            Some(Purpose::Reinvite(id)) if code >= 200 => {
                self.reinvite_done(&id, code);
                if (200..300).contains(&code) {
                    self.send_ack(&id, &resp);
                } else if code == 481 || code == 408 {
                    self.dialog_gone(&id, "re-INVITE", code);
                }
            }
            Some(Purpose::Info(id, info)) if code >= 200 => {
                if (200..300).contains(&code) {
                    if let Some(c) = self.calls.get(&id) {
                        self.ledger.call(&c.token, |l| {
                            l.infos_answered.insert(info);
                        });
                    }
                } else if code == 481 || code == 408 {
                    self.dialog_gone(&id, "INFO", code);
                }
            }
            Some(Purpose::Bye(id)) if code >= 200 => self.on_bye_answer(&id, code, now),
            _ => {}
        }
    }

    /// §12.2.1.2: a 481 or 408 to a request in a dialog ends it (408: with our BYE); in a
    /// call Drongo confirmed it is suspect (see `Suspect`).
    fn dialog_gone(&mut self, id: &str, method: &str, code: u16) {
        self.suspect(id, false, format_args!("{method} answered {code}"));
        if code == 481 {
            self.end_leg(id);
        } else {
            self.hang_up(id);
        }
    }

    pub(super) fn on_invite_response(&mut self, id: &str, resp: &Response, now: UnixMillis) {
        let code = resp.code;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let token = c.token.clone();
        if code == 180 || code == 183 {
            self.ledger.call(&token, |l| l.ringing = true);
        }
        if code < 200 {
            if c.remote_tag.is_none() {
                c.remote_tag = tag_of(resp.headers.get("To"));
            }
            c.provisional = true;
            if c.cancel_wanted {
                c.cancel_wanted = false;
                self.cancel(id, now);
            }
            return;
        }
        self.ledger.call(&token, |l| l.final_seen = true);
        if code >= 300 {
            c.state = State::Ended;
            if code == 404 || code == 480 {
                self.check_callee_unreachable(&token, code, now);
            }
            return;
        }
        if matches!(c.state, State::Confirmed | State::Closing | State::Ended) {
            // A retransmission, or a 2xx that crossed a BYE: ACK it (§13.2.2.4), with the
            // To tag the 2xx carries if the dialog never learnt one.
            if c.remote_tag.is_none() {
                c.remote_tag = tag_of(resp.headers.get("To"));
            }
            self.send_ack(id, resp);
            return;
        }
        c.remote_tag = tag_of(resp.headers.get("To"));
        if let Some(target) = resp.headers.get("Contact") {
            c.remote_target = uri_of(target);
        }
        c.state = State::Confirmed;
        let canceled = c.canceled;
        self.ledger.call(&token, |l| l.caller.answered = true);
        self.trace
            .log(&self.who, format_args!("call {token} answered"));
        self.send_ack(id, resp);
        if canceled {
            // The 2xx crossed our CANCEL: the call is up, so it is ended with BYE.
            self.hang_up(id);
        } else {
            self.plan_confirmed(id, now);
        }
    }

    /// Whether `msg` is an ACK from another node than the one its INVITE came from (see
    /// `UaConfig::lose_adopter_acks`).
    fn is_adopters_ack(&mut self, msg: &SipMessage, from: SocketAddr) -> bool {
        let SipMessage::Request(r) = msg else {
            return false;
        };
        let call_id = r.headers.get("Call-ID").unwrap_or("").to_string();
        match r.method {
            Method::Invite => {
                self.invited_from.entry(call_id).or_insert(from);
                false
            }
            Method::Ack => self.invited_from.get(&call_id).is_some_and(|f| *f != from),
            _ => false,
        }
    }

    pub(super) fn on_ack(&mut self, ack: &Request) {
        let h = &ack.headers;
        let Some(id) = h.get("Call-ID") else { return };
        let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
        let now = now_ms();
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let invite_cseq = c
            .server_invite
            .as_ref()
            .map(|(_, r)| super::failover::cseq_of(r));
        if !c.caller && invite_cseq == Some(cseq) {
            // The ACK of the 2xx to the INVITE, also when a BYE came first.
            let (token, leg) = (c.token.clone(), c.leg);
            self.ledger_leg(&token, false, leg, |l| l.acked = true);
        }
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let Some(p) = &c.pending_2xx else { return };
        if p.cseq != cseq {
            return;
        }
        c.pending_2xx = None;
        if c.state == State::Early {
            c.state = State::Confirmed;
            let id = id.to_string();
            self.plan_confirmed(&id, now);
        }
    }

    pub(super) fn on_request(&mut self, key: TxKey, req: Request, now: UnixMillis) {
        let h = &req.headers;
        let to_tag = tag_of(h.get("To"));
        let call_id = h.get("Call-ID").unwrap_or("").to_string();
        if req.method == Method::Cancel {
            let invite = self.tx.invite_for_cancel(&key);
            let call = self
                .calls
                .values_mut()
                .find(|c| c.server_invite.as_ref().map(|s| &s.0) == invite.as_ref());
            let Some(c) = call else {
                let r = response_to(&req, 481, None, "x");
                let _ = self.tx.send_response(&key, r, now);
                return;
            };
            let tag = c.local_tag.clone();
            let _ = self
                .tx
                .send_response(&key, response_to(&req, 200, None, &tag), now);
            // After our 2xx the INVITE is answered: the CANCEL changes nothing (§9.2).
            if c.state == State::Early && !c.sent_2xx {
                c.canceled = true;
                c.state = State::Ended;
                if let Some((ikey, inv)) = c.server_invite.clone() {
                    let _ = self
                        .tx
                        .send_response(&ikey, response_to(&inv, 487, None, &tag), now);
                }
            }
            return;
        }
        if to_tag.is_none() {
            if req.method == Method::Invite {
                return self.new_call(key, req, now);
            }
            let r = response_to(&req, 405, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        }
        // In a dialog.
        let cseq = h.get("CSeq").and_then(CSeq::parse).map_or(0, |c| c.seq);
        let known = self
            .calls
            .get(&call_id)
            .filter(|c| Some(&c.local_tag) == to_tag.as_ref());
        let Some(c) = known else {
            let r = response_to(&req, 481, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        };
        if req.method == Method::Bye {
            let (token, caller, leg) = (c.token.clone(), c.caller, c.leg);
            let at = sim_ms();
            self.ledger_leg(&token, caller, leg, |l| {
                l.got_bye_at.get_or_insert(at);
            });
        }
        let Some(c) = self.calls.get(&call_id) else {
            return;
        };
        if c.vanished {
            if req.method == Method::Bye {
                self.trace
                    .log(&self.who, format_args!("(silent) got BYE in {call_id}"));
                self.end_leg(&call_id);
            }
            return;
        }
        // The dialog lasts until our BYE's transaction ends (§15.1.1): a request that
        // crosses our BYE is answered (a re-INVITE 491 below), never 481, which would tell
        // Drongo the dialog was gone before our BYE reached it.
        if c.state == State::Ended {
            let r = response_to(&req, 481, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        }
        if c.remote_cseq.is_some_and(|r| cseq <= r) {
            // §12.2.2: out of order, refused with 500. Two requests of Drongo's in flight
            // on one leg can arrive swapped (loss, jitter): a lower CSeq is the network's
            // doing. The same CSeq on a new request is Drongo's: it never numbers two
            // requests alike (a restart included: the CSeq is stored before it is used).
            if c.remote_cseq == Some(cseq) {
                self.violation(format_args!(
                    "{} in {call_id} reuses CSeq {cseq} of an earlier request",
                    req.method
                ));
            } else {
                self.trace.log(
                    &self.who,
                    format_args!("{} in {call_id}: CSeq {cseq} out of order: 500", req.method),
                );
            }
            let r = response_to(&req, 500, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        }
        let tag = c.local_tag.clone();
        let (reinvite_pending, awaiting_ack, token) = (
            c.reinvite_pending || c.state == State::Closing,
            c.pending_2xx.is_some(),
            c.token.clone(),
        );
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.remote_cseq = Some(cseq);
        }
        match req.method {
            Method::Bye => {
                // §15.1.2: a re-INVITE we have not answered yet gets 487.
                self.refuse_held_reinvite(&call_id, 487, now);
                let _ = self
                    .tx
                    .send_response(&key, response_to(&req, 200, None, &tag), now);
                self.end_leg(&call_id);
            }
            Method::Invite => {
                let held = self
                    .calls
                    .get(&call_id)
                    .is_some_and(|c| c.reinvite_in.is_some());
                if reinvite_pending || awaiting_ack || held {
                    let r = response_to(&req, 491, None, &tag);
                    let _ = self.tx.send_response(&key, r, now);
                    return;
                }
                let (lo, hi) = self.cfg.reinvite_answer_ms;
                if hi > 0 {
                    let after = self.between(lo, hi);
                    if let Some(c) = self.calls.get_mut(&call_id) {
                        c.reinvite_in = Some((key, req));
                    }
                    self.ledger.call(&token, |l| l.reinvites_held += 1);
                    self.at(now + after, Action::AnswerReinvite(call_id));
                    return;
                }
                self.answer_reinvite(&call_id, key, req, now);
            }
            _ => {
                if req.method == Method::Info {
                    let info = String::from_utf8_lossy(&req.body).into_owned();
                    self.ledger.call(&token, |l| {
                        l.infos_seen.insert(info);
                    });
                }
                let r = response_to(&req, 200, None, &tag);
                let _ = self.tx.send_response(&key, r, now);
            }
        }
    }

    pub(super) fn new_call(&mut self, key: TxKey, req: Request, now: UnixMillis) {
        let h = &req.headers;
        let user = req
            .uri
            .strip_prefix("sip:")
            .and_then(|u| u.split('@').next())
            .unwrap_or("");
        if user != self.cfg.user {
            self.violation(format_args!(
                "INVITE for {} reached {}",
                req.uri, self.cfg.user
            ));
        }
        let Some(token) = token_of(&req.body) else {
            self.violation("INVITE without the caller's SDP");
            let r = response_to(&req, 488, None, "x");
            let _ = self.tx.send_response(&key, r, now);
            return;
        };
        let call_id = h.get("Call-ID").unwrap_or("").to_string();
        let local_tag = self.ids.tag();
        let leg = {
            let mut l = self.ledger.lock();
            let c = l.calls.entry(token.clone()).or_default();
            c.callees.push(Leg {
                ua: self.who.clone(),
                call_id: call_id.clone(),
                ..Leg::default()
            });
            c.callees.len() - 1
        };
        let call = Call {
            token,
            caller: false,
            leg,
            local_tag: local_tag.clone(),
            remote_tag: tag_of(h.get("From")),
            local_uri: h.get("To").unwrap_or("").to_string(),
            remote_uri: h
                .get("From")
                .map(|f| f.split(";tag=").next().unwrap_or(f).to_string())
                .unwrap_or_default(),
            remote_target: h.get("Contact").map(uri_of).unwrap_or_default(),
            local_cseq: 0,
            remote_cseq: h.get("CSeq").and_then(CSeq::parse).map(|c| c.seq),
            server_invite: Some((key.clone(), req.clone())),
            ..Call::default()
        };
        if call.remote_target.is_empty() {
            self.violation("INVITE without Contact");
        }
        self.calls.insert(call_id.clone(), call);
        let mut ringing = response_to(&req, 180, None, &local_tag);
        ringing
            .headers
            .push("Contact", format!("<{}>", contact_uri(&self.cfg)));
        let _ = self.tx.send_response(&key, ringing, now);
        let roll = self.rng.next_u64() % 100;
        let after = self.between(self.cfg.ring_ms.0, self.cfg.ring_ms.1);
        let action = match roll {
            0..=74 => Action::Answer(call_id),
            75..=84 => Action::Reject(call_id, 486),
            85..=89 => Action::Reject(call_id, 603),
            _ => return, // never answers: the caller gives up
        };
        self.at(now + after, action);
    }
}
