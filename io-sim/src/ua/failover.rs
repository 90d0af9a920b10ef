//! Failover between the nodes of a cluster for requests in a dialog, as a phone fails over
//! between the addresses of a DNS SRV record (RFC 3263 §4.3): a request that gets no
//! answer within `UaConfig::failover_ms`, or a 503, is sent again (same CSeq, new branch)
//! to the next node, for at most 64·T1.
//!
//! The copies of one request are judged together: the first 2xx of any copy is the answer;
//! a failure (481, 408, a timeout) counts only once no other copy can still answer. A node
//! that was only slow may answer the first copy after a later one found the call already
//! ended by it.

use super::*;
use std::collections::BTreeSet;

/// One request (call, CSeq) and its copies.
#[derive(Default)]
struct Group {
    /// Copies not yet finished.
    live: BTreeSet<TxKey>,
    answered: bool,
    /// A copy's failure, judged when no copy is left: the response (`None`: no answer).
    deferred: Option<(Purpose, Option<Response>)>,
}

/// The newest copy of a request, waiting for any answer before the next goes.
struct Pending {
    call: String,
    request: Request,
    purpose: Purpose,
    give_up_at: UnixMillis,
}

#[derive(Default)]
pub(super) struct Resent {
    pending: BTreeMap<TxKey, Pending>,
    group_of: BTreeMap<TxKey, (String, u32)>,
    groups: BTreeMap<(String, u32), Group>,
}

/// The CSeq number of `r` (0 when it has none).
pub(super) fn cseq_of(r: &Request) -> u32 {
    r.headers
        .get("CSeq")
        .and_then(CSeq::parse)
        .map_or(0, |c| c.seq)
}

impl Ua {
    /// Sends a request in call `id`'s dialog to the call's node, ready to fail over.
    pub(super) fn send_in_dialog(&mut self, id: String, req: Request, purpose: Purpose) {
        let now = now_ms();
        let to = self.proxy_of(&id);
        let group = (id.clone(), cseq_of(&req));
        let Some(key) = self.send_to(req.clone(), purpose.clone(), to) else {
            return;
        };
        let g = self.resent.groups.entry(group.clone()).or_default();
        g.live.insert(key.clone());
        self.resent.group_of.insert(key.clone(), group);
        let pending = Pending {
            call: id,
            request: req,
            purpose,
            give_up_at: now + 64 * self.timers_cfg.t1,
        };
        self.resent.pending.insert(key.clone(), pending);
        self.at(
            now + self.cfg.failover_ms.unwrap_or(1_000),
            Action::Failover(key),
        );
    }

    /// The copy `key` had no answer in time (or a 503): the next copy goes to the next
    /// node, unless the time for trying is over.
    pub(super) fn fail_over(&mut self, key: &TxKey, why: &str) {
        let Some(p) = self.resent.pending.remove(key) else {
            return;
        };
        let now = now_ms();
        let group = (p.call.clone(), cseq_of(&p.request));
        if now >= p.give_up_at {
            return self.judge(&group, now);
        }
        let Some(c) = self.calls.get_mut(&p.call) else {
            return;
        };
        c.proxy = (c.proxy + 1) % self.cfg.proxies.len().max(1);
        let mut req = p.request;
        let branch = self.ids.branch();
        req.headers.set(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch}", self.cfg.addr),
        );
        let to = self.proxy_of(&p.call);
        self.trace.log(
            &self.who,
            format_args!("{why}: {} in {} again to {}", req.method, p.call, to.addr),
        );
        self.ledger.lock().counts.failovers += 1;
        let Some(new) = self.send_to(req.clone(), p.purpose.clone(), to) else {
            return;
        };
        if let Some(g) = self.resent.groups.get_mut(&group) {
            g.live.insert(new.clone());
        }
        self.resent.group_of.insert(new.clone(), group);
        let next = Pending { request: req, ..p };
        self.resent.pending.insert(new.clone(), next);
        self.at(
            now + self.cfg.failover_ms.unwrap_or(1_000),
            Action::Failover(new),
        );
    }

    /// A response to copy `key`: whether it is handled as usual now (otherwise it was
    /// kept for later, or means nothing).
    pub(super) fn copy_response(&mut self, key: &TxKey, resp: &Response, now: UnixMillis) -> bool {
        let Some(group) = self.resent.group_of.get(key).cloned() else {
            return true;
        };
        if resp.code < 200 {
            self.resent.pending.remove(key);
            return true;
        }
        if resp.code == 503 && self.resent.pending.contains_key(key) {
            // Another node holds the call, or it is busy: the next one, after a pause (it
            // may be the adopter, not ready yet).
            self.finished(key, &group, Some(resp.clone()));
            self.at(now + 500, Action::Failover(key.clone()));
            return false;
        }
        self.resent.pending.remove(key);
        if (200..300).contains(&resp.code) {
            if let Some(g) = self.resent.groups.get_mut(&group) {
                g.live.remove(key);
                g.answered = true;
                g.deferred = None;
                let others: Vec<TxKey> = g.live.iter().cloned().collect();
                for k in others {
                    self.resent.pending.remove(&k);
                }
            }
            return true;
        }
        self.finished(key, &group, Some(resp.clone()));
        self.judge(&group, now);
        false
    }

    /// Copy `key` timed out: whether the failure is handled as usual now.
    pub(super) fn copy_failed(&mut self, key: &TxKey, now: UnixMillis) -> bool {
        let Some(group) = self.resent.group_of.get(key).cloned() else {
            return true;
        };
        self.resent.pending.remove(key);
        self.finished(key, &group, None);
        self.judge(&group, now);
        false
    }

    /// Copy `key`'s transaction is over.
    pub(super) fn copy_ended(&mut self, key: &TxKey) {
        self.resent.group_of.remove(key);
    }

    /// Copy `key` ended without a 2xx: its failure is kept (a response over silence).
    fn finished(&mut self, key: &TxKey, group: &(String, u32), resp: Option<Response>) {
        let purpose = self.purposes.get(key).cloned();
        let Some(g) = self.resent.groups.get_mut(group) else {
            return;
        };
        g.live.remove(key);
        let keep = resp.is_some() || g.deferred.is_none();
        if let (Some(p), true) = (purpose, keep) {
            g.deferred = Some((p, resp));
        }
    }

    /// Once no copy of the request can answer any more, and none answered 2xx, its
    /// failure is handled.
    fn judge(&mut self, group: &(String, u32), now: UnixMillis) {
        let Some(g) = self.resent.groups.get(group) else {
            return;
        };
        if !g.live.is_empty() || self.failover_due(group) {
            return;
        }
        let Some(g) = self.resent.groups.remove(group) else {
            return;
        };
        match g.deferred.filter(|_| !g.answered) {
            Some((p, Some(resp))) => self.on_response(Some(p), resp, now),
            Some((p, None)) => self.on_failure(Some(p), now),
            None => {}
        }
    }

    /// Whether a copy of the request is still to be sent (a 503's pause).
    fn failover_due(&self, group: &(String, u32)) -> bool {
        self.resent
            .pending
            .values()
            .any(|p| p.call == group.0 && cseq_of(&p.request) == group.1)
    }
}
