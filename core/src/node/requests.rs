//! What a new request gets: in-dialog requests go to their call, INVITE is authenticated
//! and routed before the B2BUA takes it, REGISTER goes to the registrar, OPTIONS is
//! answered here; overload and draining refuse new work.

use super::Node;
use crate::auth::Verdict;
use crate::b2bua::max_forwards;
use crate::dialog::{peer_for_uri, uri_of};
use crate::message::{header_param, Method, Request, Via};
use crate::registrar::{user_of, RegisterOutcome};
use crate::store::reg_key;
use crate::transaction::{Peer, TxKey};
use crate::UnixMillis;

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER";

impl Node {
    /// Too much is waiting for the store: new work is refused (503) until it drains.
    pub fn is_overloaded(&self) -> bool {
        self.ledger.len() >= self.sink.cfg.limits.max_uncommitted_batches
    }

    pub(super) fn on_request(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        let to_tag = req
            .headers
            .get("To")
            .and_then(|t| header_param(t, "tag"))
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let clustered = self.is_clustered();
        let s = &mut self.sink;
        if let Some(tag) = to_tag {
            if req.method == Method::Cancel {
                return self.b2bua.on_cancel(s, &key, &req, now);
            }
            let call_id = req.headers.get("Call-ID").unwrap_or("");
            let held = self.b2bua.dialog_of(call_id, &tag);
            let owed = held.is_none().then(|| self.b2bua.owed_2xx(&req)).flatten();
            let copy_of_2xx = match &held {
                Some((id, side)) => self.b2bua.holds_2xx_for(id, *side, &req),
                None => owed.is_some(),
            };
            if copy_of_2xx && self.ledger.is_busy(call_id) {
                // A retransmitted INVITE whose 2xx still waits for the store (or queues
                // behind a write of its call): a copy now would only leave in a burst with
                // it. Dropped, as the 2xx's own retransmissions are meanwhile.
                s.metrics.retransmissions_dropped += 1;
                return s.tx.abandon(&key);
            }
            if let Some(ok) = owed {
                // A re-INVITE answered 2xx before its call ended is answered that again.
                s.respond_copy(&key, ok, &req, now);
                return self.b2bua.owed_2xx_sent(&self.sink, &req, now);
            }
            return match held {
                Some((id, side)) => self.b2bua.in_dialog(s, &id, side, key, req, now),
                None if req.method == Method::Bye && self.b2bua.bye_owed(call_id, &tag, now) => {
                    s.reply(&key, &req, 200, None, &[], now)
                }
                // Another member's call, perhaps: load it (see `cluster`).
                None if clustered => self.await_call(key, req, from, now),
                None => s.reply(&key, &req, 481, None, &[], now),
            };
        }
        if matches!(req.method, Method::Invite | Method::Register) && self.is_overloaded() {
            // The store is behind: taking more work would only queue it. §21.5.4.
            let s = &mut self.sink;
            s.metrics.overload_refusals += 1;
            let wait = (1 + s.ids.below(5)).to_string();
            return s.reply(&key, &req, 503, None, &[("Retry-After", wait)], now);
        }
        let s = &mut self.sink;
        match req.method {
            Method::Invite => self.on_invite(key, req, from, now),
            Method::Register => self.on_register(key, req, from, now),
            Method::Cancel => match s.tx.invite_for_cancel(&key) {
                // The INVITE it cancels may be another member's (a balancer that lost the
                // INVITE's node sends it anywhere): found through its call, as in a dialog.
                None if clustered => self.await_call(key, req, from, now),
                invite => {
                    self.b2bua.on_cancel(s, &key, &req, now);
                    if let Some(invite) = invite {
                        self.cancel_parked_invite(&invite, now);
                    }
                }
            },
            Method::Options => {
                let h = [
                    ("Allow", ALLOW.to_string()),
                    ("Accept", "application/sdp".to_string()),
                    ("Supported", "timer".to_string()),
                ];
                s.reply(&key, &req, 200, None, &h, now)
            }
            Method::Bye | Method::Update | Method::Info | Method::Prack => {
                s.reply(&key, &req, 481, None, &[], now)
            }
            _ => s.reply(&key, &req, 405, None, &[("Allow", ALLOW.to_string())], now),
        }
    }

    /// Challenges or checks credentials; `None` when the request was answered (challenge
    /// or 403), else the authenticated user, if any.
    fn authenticate(
        &mut self,
        key: &TxKey,
        req: &Request,
        proxy: bool,
        now: UnixMillis,
    ) -> Option<Option<String>> {
        let (hdr, challenge, code) = if proxy {
            ("Proxy-Authorization", "Proxy-Authenticate", 407)
        } else {
            ("Authorization", "WWW-Authenticate", 401)
        };
        let s = &mut self.sink;
        match self.auth.verify(req, hdr, &s.cfg, now) {
            Verdict::Authenticated(user) => Some(Some(user)),
            Verdict::Challenge { stale } => {
                let h: Vec<(&str, String)> = self
                    .auth
                    .challenges(&s.cfg, now, stale)
                    .into_iter()
                    .map(|c| (challenge, c))
                    .collect();
                s.reply(key, req, code, None, &h, now);
                None
            }
            Verdict::Forbidden => {
                s.reply(key, req, 403, None, &[], now);
                None
            }
        }
    }

    fn on_register(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        let Some(aor) = req.headers.get("To").map(uri_of).and_then(|u| user_of(&u)) else {
            return self.sink.reply(&key, &req, 404, None, &[], now);
        };
        if self.sink.cfg.auth_required {
            match self.authenticate(&key, &req, false, now) {
                None => return,
                Some(Some(user)) if user != aor => {
                    return self
                        .sink
                        .reply(&key, &req, 403, Some("Wrong User"), &[], now)
                }
                Some(_) => {}
            }
        }
        self.apply_register(&aor, key, req, from, now);
    }

    /// §10.3 steps 5–8 for an authenticated REGISTER of `aor` (again after a read-through).
    pub(super) fn apply_register(
        &mut self,
        aor: &str,
        key: TxKey,
        req: Request,
        from: Peer,
        now: UnixMillis,
    ) {
        let aor = aor.to_string();
        if req.headers.get("Contact").is_none() && self.ledger.is_busy(&reg_key(&aor)) {
            // A query while a write of the AOR waits for the store: the bindings in memory
            // are not durable yet (the write may fail and be taken back), and a 200 listing
            // them would reveal them. No answer now: the retransmission is answered once the
            // store has.
            self.sink.metrics.lookups_deferred += 1;
            return self.sink.tx.abandon(&key);
        }
        if req.headers.get("Contact").is_none() && self.should_read_through(&aor) {
            // In a cluster a query lists what the store holds: the copy the watch keeps
            // lags a little, and the 200 must not list a binding removed through another
            // member, nor miss one added there (see `bindings`).
            return self.await_binding(&aor, key, req, from, now);
        }
        let s = &mut self.sink;
        match self
            .registrar
            .register(&aor, &req, from, now, &s.cfg.registrar)
        {
            RegisterOutcome::Ok { contacts, write } => {
                // The 200 lists what is bound now: a removal it reports must be as durable
                // as an addition (§10.3 step 8, durable before visible).
                s.reveals_deletes = true;
                s.writes.extend(write);
                let mut h: Vec<(&str, String)> =
                    contacts.iter().map(|c| ("Contact", c.contact())).collect();
                // RFC 3327 §5.3: the Path stored is echoed to a phone that supports it.
                let supports_path = req
                    .headers
                    .tokens("Supported")
                    .any(|o| o.eq_ignore_ascii_case("path"));
                if supports_path {
                    h.extend(req.headers.get_all("Path").map(|p| ("Path", p.to_string())));
                }
                s.reply(&key, &req, 200, None, &h, now);
            }
            RegisterOutcome::Refused {
                code,
                reason,
                min_expires,
            } => {
                let h: Vec<(&str, String)> = min_expires
                    .map(|m| ("Min-Expires", m.to_string()))
                    .into_iter()
                    .collect();
                s.reply(&key, &req, code, Some(reason), &h, now);
            }
        }
    }

    /// A new INVITE: refused while draining, authenticated unless from a trusted source,
    /// checked for loops (§16.3), then routed.
    fn on_invite(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        if self.draining {
            let h = [("Retry-After", "5".to_string())];
            return self.sink.reply(&key, &req, 503, None, &h, now);
        }
        if self.sink.cfg.auth_required
            && !self.sink.cfg.trusted_sources.contains(&from.addr.ip())
            && self.authenticate(&key, &req, true, now).is_none()
        {
            return;
        }
        let s = &mut self.sink;
        if max_forwards(&req) == 0 {
            return s.reply(&key, &req, 483, None, &[], now);
        }
        // Only a Via carrying our branch prefix can be ours: the others are not parsed.
        let prefix = self.branch_prefix.as_str();
        let looped = req
            .headers
            .get_all("Via")
            .filter(|raw| raw.contains(prefix))
            .filter_map(Via::parse)
            .any(|v| {
                v.branch().is_some_and(|b| b.starts_with(prefix))
                    && v.sent_by() == s.advertise.to_string()
            });
        if looped {
            return s.reply(&key, &req, 482, None, &[], now);
        }
        self.route_invite(key, req, from, now);
    }

    /// Routes an INVITE that passed the checks (again after a read-through): a configured
    /// route, else the callee's best binding; then the B2BUA starts the call.
    pub(super) fn route_invite(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        let s = &mut self.sink;
        let Some(user) = user_of(&req.uri) else {
            return s.reply(&key, &req, 404, None, &[], now);
        };
        let target = if let Some(r) = s.cfg.routes.iter().find(|r| r.user == user) {
            peer_for_uri(&r.target).map(|p| (r.target.clone(), p, Vec::new()))
        } else {
            self.registrar.lookup(&user, now).first().map(|b| {
                let peer = peer_for_uri(&b.uri).unwrap_or(b.source);
                (b.uri.clone(), peer, b.path.clone())
            })
        };
        if target.is_none() && self.should_read_through(&user) {
            // The callee may have registered through another member a moment ago.
            return self.await_binding(&user, key, req, from, now);
        }
        let s = &mut self.sink;
        let Some(target) = target else {
            let known = s.cfg.user(&user).is_some();
            return s.reply(&key, &req, if known { 480 } else { 404 }, None, &[], now);
        };
        self.b2bua.new_call(s, key, req, from, target, now);
    }
}
