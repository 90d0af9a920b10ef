//! The user agent's registration: REGISTER and its refreshes, lookups of its own binding,
//! de-registration (`Expires: 0` on its contact, or `Contact: *`), and the checks that a
//! binding answered 200 is found until it expires and not after, and gone once removed.

use super::*;

impl Ua {
    /// A REGISTER for our AOR, with our registration's Call-ID and the next CSeq.
    fn register_request(&mut self) -> Request {
        let uri = format!("sip:{}", self.cfg.home);
        let mut r = self.base_request(Method::Register, &uri);
        let aor = format!("<sip:{}@drongo>", self.cfg.user);
        let tag = self.ids.tag();
        r.headers.push("From", format!("{aor};tag={tag}"));
        r.headers.push("To", aor);
        r.headers.push("Call-ID", self.reg.call_id.clone());
        self.reg.cseq += 1;
        r.headers
            .push("CSeq", format!("{} REGISTER", self.reg.cseq));
        r
    }

    /// Removes our binding (§10.2.2): `Contact: *` with `Expires: 0`, or our contact with
    /// `expires=0`. Not while another REGISTER of ours is in flight (its answer could then
    /// be taken for this one's).
    pub(super) fn deregister(&mut self, star: bool) {
        let now = now_ms();
        if !self.reg.pending.is_empty() || self.reg.deregistering {
            return self.at(now + 1_000, Action::Deregister);
        }
        // A device of a shared address-of-record removes only its own binding (`*` would
        // remove the other device's too).
        let star = star && !self.cfg.twin;
        let mut r = self.register_request();
        // The mutant registrar keeps the binding for an hour instead.
        let e = if self.cfg.mutant_keep_bindings {
            3_600
        } else {
            0
        };
        if star && e == 0 {
            r.headers.push("Contact", "*");
            r.headers.push("Expires", "0");
        } else {
            let c = format!("<{}>;expires={e}", contact_uri(&self.cfg));
            r.headers.push("Contact", c);
        }
        self.reg.deregistering = true;
        // From now on the binding may go at any moment: no lookup must find it.
        self.reg.grants.clear();
        self.ledger.lock().bound.remove(&self.cfg.user);
        self.trace.log(
            &self.who,
            format_args!(
                "de-registers ({})",
                if star { "Contact: *" } else { "expires=0" }
            ),
        );
        self.send_request(r, Purpose::Deregister);
    }

    /// The answer to our de-REGISTER: a 200 must no longer list our binding, and later
    /// lookups must not find it (until we register again).
    pub(super) fn on_deregister_answer(&mut self, resp: &Response, now: UnixMillis) {
        self.reg.deregistering = false;
        if resp.code != 200 {
            return self.at(now + 2_000, Action::Deregister);
        }
        if self.our_binding(resp).is_some() {
            self.violation("200 to a de-REGISTER still lists our binding");
        }
        // Gone when Drongo processed it, before this answer came.
        self.reg.grants.clear();
        self.reg.could_live_until = now;
        self.ledger.lock().counts.deregistrations += 1;
        let back = self.between(2_000, 8_000);
        self.at(now + back, Action::Register);
    }

    pub(super) fn register(&mut self, query: bool) {
        let now = now_ms();
        if self.reg.deregistering {
            return self.at(now + 1_000, Action::Register);
        }
        let mut r = self.register_request();
        let purpose = if query {
            // With two regions, every other lookup asks the other region.
            let remote = !self.cfg.remote.is_empty() && self.between(0, 1) == 1;
            Purpose::Probe {
                sent_at: now,
                remote,
            }
        } else {
            let e = self.cfg.reg_expires;
            r.headers.push(
                "Contact",
                format!("<{}>;expires={e}", contact_uri(&self.cfg)),
            );
            // Processed at the latest when its last retransmission arrives (64·T1).
            let latest = now + self.timers_cfg.t1 * 64 + u64::from(e) * 1000;
            self.reg.latest_until = self.reg.latest_until.max(latest);
            self.note_race();
            self.reg.pending.insert(self.reg.cseq, latest);
            Purpose::Register {
                requested: e,
                sent_at: now,
                cseq: self.reg.cseq,
            }
        };
        self.send_request(r, purpose);
    }

    pub(super) fn on_register_answer(
        &mut self,
        resp: &Response,
        requested: u32,
        sent_at: UnixMillis,
        now: UnixMillis,
    ) {
        if resp.code != 200 {
            self.at(now + 5_000, Action::Register);
            return;
        }
        let granted = self
            .our_binding(resp)
            .and_then(|n| n.param("expires").and_then(|e| e.parse::<u64>().ok()));
        let Some(secs) = granted else {
            return self.violation("200 to REGISTER does not list our binding");
        };
        if secs > u64::from(requested) {
            self.violation(format_args!(
                "granted {secs} s, more than the {requested} s asked"
            ));
        }
        // Drongo set the expiry when it processed the request: after we sent it, before
        // its answer arrived.
        self.reg.grants.push((now, sent_at + secs * 1000));
        let user = self.cfg.user.clone();
        let grant = (now, sent_at + secs * 1000);
        self.ledger
            .lock()
            .bound
            .entry(user)
            .or_default()
            .push(grant);
        self.reg.could_live_until = self.reg.could_live_until.max(now + secs * 1000);
        self.ledger
            .lock()
            .regs
            .entry(self.who.clone())
            .or_default()
            .refreshed += 1;
        self.check_listing(resp, sent_at, now);
        // Devices of one address-of-record refresh on one schedule (their REGISTERs race).
        let jitter = if self.cfg.twin {
            0
        } else {
            self.between(0, 2_000)
        };
        let refresh = secs * 1000 / 2 + jitter;
        self.at(now + refresh, Action::Register);
    }

    /// Our contact among the bindings a 200 to REGISTER lists.
    pub(super) fn our_binding(&self, resp: &Response) -> Option<NameAddr> {
        let ours = contact_uri(&self.cfg);
        resp.headers
            .get_all("Contact")
            .filter_map(NameAddr::parse)
            .find(|n| n.uri.eq_ignore_ascii_case(&ours))
    }

    pub(super) fn on_probe_answer(
        &mut self,
        resp: &Response,
        sent_at: UnixMillis,
        remote: bool,
        now: UnixMillis,
    ) {
        if resp.code != 200 {
            return;
        }
        if remote {
            return self.on_remote_probe_answer(resp, sent_at, now);
        }
        let listed = self.our_binding(resp).is_some();
        let bound = self.lookup_bound();
        // Found until it expires: a grant answered before the lookup was sent (so processed
        // before it), whose expiry is after the latest time the lookup could have been
        // processed (plus the bound), must be listed. (A grant answered later may have been
        // processed after the lookup, which overtook it on a lossy network.)
        let must = super::checks::must_find(&self.reg.grants, sent_at, now + bound);
        // None lives on after its expiry: nothing we asked for could still be alive.
        let must_not = self.reg.could_live_until + bound < sent_at && self.reg.pending.is_empty();
        self.ledger
            .lock()
            .regs
            .entry(self.who.clone())
            .or_default()
            .lookups += 1;
        self.check_listing(resp, sent_at, now);
        if must && !listed {
            let until = self.reg.grants.iter().map(|g| g.1).max().unwrap_or(0);
            self.violation(format_args!(
                "registration lost: granted until {until}, not listed at {now}"
            ));
        }
        if must_not && listed {
            self.violation(format_args!(
                "registration outlived its expiry: could live until {}, listed at {sent_at}",
                self.reg.could_live_until
            ));
        }
    }

    /// A lookup answered by the other region, whose copy of our binding follows ours within
    /// `REPLICATION_BOUND_MS` while the regions are linked (and after a heal). It must list
    /// a grant the other region has had time to copy and that has not expired; it must not
    /// list one it has had time to see removed, nor any past the latest expiry we ever
    /// asked for (a copy kept while the regions are cut apart lives no longer).
    fn on_remote_probe_answer(&mut self, resp: &Response, sent_at: UnixMillis, now: UnixMillis) {
        let listed = self.our_binding(resp).is_some();
        let bound = self.lookup_bound();
        let r = crate::world::REPLICATION_BOUND_MS;
        let linked = self.ledger.linked_since(sent_at);
        let must = linked.is_some_and(|up| {
            self.reg
                .grants
                .iter()
                .any(|(answered, until)| (*answered).max(up) + r < sent_at && *until > now + bound)
        });
        let settled = self.reg.pending.is_empty() && !self.reg.deregistering;
        let gone = linked.is_some_and(|up| {
            self.reg.could_live_until.max(up) + r + bound < sent_at
                && self.reg.could_live_until + bound < sent_at
        });
        let must_not = settled && (gone || self.reg.latest_until + bound < sent_at);
        {
            let mut l = self.ledger.lock();
            l.counts.remote_lookups += u64::from(must);
            l.counts.remote_absences += u64::from(must_not);
        }
        if must && !listed {
            self.violation(format_args!(
                "registration not copied: the other region does not list it at {now}"
            ));
        }
        if must_not && listed {
            self.violation(format_args!(
                "a removed or expired binding listed by the other region at {now} (could live until {})",
                self.reg.could_live_until
            ));
        }
    }
}
