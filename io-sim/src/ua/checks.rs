//! The checks of what Drongo sends against RFC 3261: headers copied, tags, CSeq order,
//! retransmission schedules; every broken rule is a violation in the trace.

use super::*;

impl Ua {
    pub(super) fn violation(&self, what: impl std::fmt::Display) {
        self.trace.violation(&self.who, what);
    }

    /// Updates this user agent's leg of call `token` in the ledger.
    pub(super) fn ledger_leg(
        &self,
        token: &str,
        caller: bool,
        leg: usize,
        f: impl FnOnce(&mut Leg),
    ) {
        self.ledger.call(token, |l| {
            let leg = if caller {
                Some(&mut l.caller)
            } else {
                l.callees.get_mut(leg)
            };
            if let Some(leg) = leg {
                f(leg);
            }
        });
    }

    /// Slack for schedule checks: network delay differences, and one store commit a copy
    /// may wait behind (Drongo's batches leave in order; with a fast store a commit takes
    /// up to ~22 ms here).
    /// A call answered 404 or 480 (no binding): a violation when the callee held a
    /// registration answered 200 before the INVITE left that was still good well after
    /// the answer came (every node must find every registration).
    pub(super) fn check_callee_unreachable(&self, token: &str, code: u16, now: u64) {
        let bound = self.lookup_bound();
        let l = self.ledger.lock();
        let Some(c) = l.calls.get(token) else {
            return;
        };
        let registered = l
            .bound
            .get(&c.callee_user)
            .is_some_and(|g| must_find(g, c.invited_at, now + bound));
        if registered {
            let what = format!("call {token} to {} answered {code}", c.callee_user);
            drop(l);
            self.violation(format_args!("registration not found: {what}"));
        }
    }

    /// How long after its answer a binding's state may still be seen otherwise by a lookup
    /// (the lookup overtaken on the network, clocks apart): the slack of every check that a
    /// lookup finds a binding, or does not.
    pub(super) fn lookup_bound(&self) -> u64 {
        1_500 + self.cfg.skew_bound_ms + self.tolerance()
    }

    pub(super) fn tolerance(&self) -> u64 {
        2 * self.cfg.link.jitter_ms + 50 + self.cfg.commit_slack_ms
    }

    /// Arrival `times` of copies of one message: each gap at least the RFC's interval
    /// (`cap`: T2 for non-INVITE requests and 2xx), and none after 64·T1; where nothing
    /// can be lost or held up (`upper_bounds`), also at most that interval (T1 for the
    /// first retransmission).
    pub(super) fn check_schedule(&self, what: &str, times: &[u64], cap: Option<u64>) {
        let (t1, tol) = (self.timers_cfg.t1, self.tolerance());
        let Some(first) = times.first() else { return };
        let n = times.len();
        if n < 2 {
            return;
        }
        let k = (n - 1) as u32;
        let mut expected = t1.saturating_mul(1 << (k - 1).min(20));
        if let Some(cap) = cap {
            expected = expected.min(cap);
        }
        if k == 1 {
            // The first copy may have waited for its store write while the retransmission
            // timer ran; Drongo then keeps the next copy at least T1/2 behind it.
            expected = t1 / 2;
        }
        if !self.cfg.strict_schedule {
            expected = t1 / 2;
            let most = if cap.is_some() { 11 } else { 7 };
            if n > most {
                self.violation(format_args!(
                    "{what}: {n} copies, more than the RFC's {most}"
                ));
            }
        }
        let gap = times[n - 1] - times[n - 2];
        if gap + tol < expected {
            self.violation(format_args!(
                "{what}: copy {n} came {gap} ms after the previous one; the RFC's interval is {expected} ms"
            ));
        }
        let latest = if k == 1 { t1 } else { expected };
        if self.cfg.upper_bounds && gap > latest + tol {
            self.violation(format_args!(
                "{what}: copy {n} came {gap} ms after the previous one, later than the RFC's interval of {latest} ms"
            ));
        }
        if self.cfg.strict_schedule && times[n - 1] - first > 64 * t1 + tol {
            self.violation(format_args!(
                "{what}: copy {n} came {} ms after the first, past 64·T1",
                times[n - 1] - first
            ));
        }
    }

    pub(super) fn check_request(&mut self, r: &Request, duplicate: bool) {
        let h = &r.headers;
        let Some(branch) = top_branch(h).filter(|b| b.starts_with("z9hG4bK")) else {
            return self.violation(format_args!("{} without an RFC 3261 branch", r.method));
        };
        if h.get("Max-Forwards").is_none() || tag_of(h.get("From")).is_none() {
            self.violation(format_args!(
                "{} without Max-Forwards or From tag",
                r.method
            ));
        }
        if r.method == Method::Ack || duplicate {
            return;
        }
        let key = format!("{branch} {}", r.method);
        let t = sim_ms();
        let times = self.copies.entry(key.clone()).or_default();
        times.push(t);
        let times = times.clone();
        let cap = (r.method != Method::Invite).then_some(self.timers_cfg.t2);
        self.check_schedule(&format!("{} {key}", r.method), &times, cap);
    }

    pub(super) fn check_response(&mut self, r: &Response, duplicate: bool, from: SocketAddr) {
        let h = &r.headers;
        let branch = top_branch(h).unwrap_or_default();
        let code = r.code;
        let cseq = h.get("CSeq").and_then(CSeq::parse);
        let method = cseq.as_ref().map_or(Method::Ack, |c| c.method.clone());
        let Some(sent) = self.sent.get_mut(&format!("{branch} {method}")) else {
            return self.violation(format_args!("{code} for a request never sent"));
        };
        let mut wrong = Vec::new();
        if h.get("Call-ID") != Some(sent.call_id.as_str()) {
            wrong.push("Call-ID");
        }
        if cseq.as_ref().map(|c| (c.seq, &c.method)) != Some((sent.cseq, &sent.method)) {
            wrong.push("CSeq");
        }
        if tag_of(h.get("From")).as_deref() != Some(sent.from_tag.as_str()) {
            wrong.push("From tag");
        }
        let to_tag = tag_of(h.get("To"));
        if code > 100 && to_tag.is_none() {
            wrong.push("To tag (missing)");
        }
        if (101..300).contains(&code) {
            if let Some(tag) = &to_tag {
                match &sent.to_tag {
                    Some(t) if t != tag => wrong.push("To tag (changed)"),
                    Some(_) => {}
                    None => sent.to_tag = Some(tag.clone()),
                }
            }
        }
        let method = sent.method.clone();
        if code >= 200 {
            let this = (code, to_tag.clone().unwrap_or_default());
            let clash = match &sent.final_ {
                Some(f) if *f != this => Some(f.0),
                Some(_) => None,
                None => {
                    sent.final_ = Some(this);
                    None
                }
            };
            if let Some(first) = clash {
                self.trace.violation(
                    &self.who,
                    format_args!(
                        "two different final responses for one {method}: {first} then {code}"
                    ),
                );
            }
        }
        let has_sdp = sent.has_sdp;
        let call_id = sent.call_id.clone();
        if method == Method::Invite && (200..300).contains(&code) {
            if h.get("Contact").is_none() {
                wrong.push("Contact (missing in 2xx)");
            }
            if has_sdp && token_of(&r.body).is_none() {
                wrong.push("SDP answer (missing)");
            }
            if !duplicate {
                let mut key = format!("{call_id} {}", cseq.map_or(0, |c| c.seq));
                if self.cfg.failover_ms.is_some() {
                    // In a cluster each node keeps its own schedule: an adopter sends the
                    // 2xx again at once, not knowing whether the ACK reached the old owner.
                    // And each copy of the INVITE sent to another node (a new branch) is a
                    // transaction of its own, whose answer is not a retransmission of the
                    // first copy's (store-leader-change-during-takeover seed 646: a node
                    // answered two such copies 2 ms apart).
                    key = format!("{key} from {} via {branch}", from.ip());
                }
                let t = sim_ms();
                let times = self.ok_copies.entry(key.clone()).or_default();
                times.push(t);
                let times = times.clone();
                let cap = Some(self.timers_cfg.t2);
                self.check_schedule(&format!("2xx to INVITE {key}"), &times, cap);
            }
        }
        if !wrong.is_empty() {
            self.violation(format_args!(
                "{code} to {method}: wrong {}",
                wrong.join(", ")
            ));
        }
    }
}

/// Whether one of `grants` (answered at, live until) was answered before `asked` (so
/// processed before a lookup sent then) and lives past `until`: a binding the lookup must
/// find.
pub(super) fn must_find(grants: &[(u64, u64)], asked: u64, until: u64) -> bool {
    grants
        .iter()
        .any(|(answered, u)| *answered < asked && *u > until)
}
