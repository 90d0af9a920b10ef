//! The registrar as a cluster member: every node finds every registration.
//!
//! Bindings live in the store (`reg/{aor}`, one record per address-of-record). Each member
//! keeps a copy of all of them, current through the runtime's watch on `reg/`
//! ([`Node::handle_watched`] → [`Registrar::observe`]). A REGISTER is a compare-and-swap on
//! the AOR's record from that copy: when another member wrote the AOR first, the write
//! fails, its 200 is withdrawn, the record is read back, and the phone's retransmission
//! is applied on the truth (§10.3 ordering holds: nothing is lost, nothing applied twice).
//!
//! The watch lags a little behind the store, so a REGISTER query reads the AOR from the
//! store, and an INVITE whose callee has no binding here is not answered from the copy
//! alone: the request waits while the node reads the AOR's record, then is handled again
//! on what it read. (An INVITE routed by a copy that holds an older record goes where that
//! record says: that lasts only as long as the watch lags.)
//!
//! Expired bindings are removed from the store by the leader alone (the registration
//! watchdog); the record's own expiry in the store removes an AOR whose bindings all
//! expired, whoever leads.
//!
//! [`Registrar::observe`]: crate::registrar::Registrar::observe

use super::parked::Park;
use super::Node;
use crate::message::Request;
use crate::store::{reg_key, StoredRecord};
use crate::transaction::{Peer, TxKey};
use crate::UnixMillis;
use std::collections::BTreeSet;

/// Lookups that missed and wait for the store.
#[derive(Default)]
pub(super) struct Lookups {
    /// Requests waiting, by the AOR they look up.
    waiting: super::parked::Parked,
    /// AORs just read: a lookup of one of these that misses again is answered as a miss.
    fresh: BTreeSet<String>,
}

impl Node {
    /// Whether a lookup of `aor` (a REGISTER query; an INVITE whose callee has no binding
    /// here) should read the store before it is answered: in a cluster, unless the record
    /// was just read.
    pub(super) fn should_read_through(&self, aor: &str) -> bool {
        self.is_clustered() && !self.lookups.fresh.contains(aor)
    }

    /// Parks a request whose lookup of `aor` missed, and reads the AOR's record.
    pub(super) fn await_binding(
        &mut self,
        aor: &str,
        key: TxKey,
        req: Request,
        from: Peer,
        now: UnixMillis,
    ) {
        match self.lookups.waiting.park(aor, (key, req, from)) {
            Park::First => self.queue_load(reg_key(aor)),
            Park::Joined => {}
            Park::Full(entry) => {
                let (key, req, _) = *entry;
                let h = [("Retry-After", "1".to_string())];
                return self.sink.reply(&key, &req, 503, None, &h, now);
            }
        }
        self.sink.metrics.lookups_read_through += 1;
    }

    /// The AOR's record as read (`None`: the store did not answer; the waiting requests
    /// get 503). The requests are handled again on it.
    pub(super) fn binding_loaded(
        &mut self,
        aor: &str,
        record: Option<Option<StoredRecord>>,
        now: UnixMillis,
    ) {
        let waiting = self.lookups.waiting.take(aor);
        let Some(record) = record else {
            for (key, req, _) in waiting {
                let h = [("Retry-After", "1".to_string())];
                self.sink.reply(&key, &req, 503, None, &h, now);
            }
            return;
        };
        let pending = self.ledger.is_busy(&reg_key(aor));
        let record = record.filter(|r| r.is_live(now));
        self.registrar.observe(aor, record.as_ref(), pending);
        self.lookups.fresh.insert(aor.to_string());
        for (key, req, from) in waiting {
            // On from where it stopped: its credentials were checked (and a nonce-count
            // may not be used twice).
            if req.method == crate::message::Method::Register {
                self.apply_register(aor, key, req, from, now);
            } else {
                self.route_invite(key, req, from, now);
            }
        }
        self.lookups.fresh.remove(aor);
    }

    /// A CANCEL came for an INVITE still parked for its callee's bindings (no call made
    /// yet, its CANCEL answered 200): the INVITE ends here, 487 (§9.2), and makes no call
    /// when the read answers (cluster-chaos seed 83: it did, and rang the callee for a
    /// caller that had given up).
    pub(super) fn cancel_parked_invite(&mut self, invite: &TxKey, now: UnixMillis) {
        let mut cancelled = None;
        self.lookups.waiting.retain_named(|_, (key, req, _)| {
            let hit = key == invite && cancelled.is_none();
            if hit {
                cancelled = Some((key.clone(), req.clone()));
            }
            !hit
        });
        if let Some((key, req)) = cancelled {
            self.sink.reply(&key, &req, 487, None, &[], now);
        }
    }

    /// Drops the parked INVITEs (the node joined again: their transactions are given up,
    /// and a retransmission starts afresh). Parked REGISTER queries stay.
    pub(super) fn drop_parked_lookups(&mut self) {
        self.lookups
            .waiting
            .retain(|(_, req, _)| req.method == crate::message::Method::Register);
    }

    /// A change of an AOR's record seen by the watch.
    pub(super) fn binding_watched(&mut self, aor: &str, record: Option<StoredRecord>) {
        if !self.is_clustered() {
            return;
        }
        let pending = self.ledger.is_busy(&reg_key(aor));
        self.registrar.observe(aor, record.as_ref(), pending);
    }

    /// The leader's watchdog for flows: bindings registered over a connection to a member
    /// this node saw live and that has left since are removed (nobody else can reach
    /// their phones; they register again over a new connection). A member never seen is
    /// left alone: it may have just joined, its record not yet in our list.
    pub(super) fn remove_dead_flows(&mut self, now: UnixMillis) {
        let (Some(term), Some(live)) = (self.cluster.leader_term, &self.cluster.members) else {
            return;
        };
        let seen = &self.cluster.incarnations;
        let alive = |m: u16| live.contains_key(&m) || !seen.contains_key(&m);
        let writes = self.registrar.remove_dead_flows(&alive, now);
        self.sink.metrics.flow_bindings_removed = self.registrar.flows_removed();
        self.sink
            .writes
            .extend(writes.into_iter().map(|w| w.fenced(term)));
        self.flush();
    }

    /// Whether this node writes the removal of expired bindings: alone, or as the leader.
    pub(super) fn runs_watchdog(&self) -> bool {
        !self.is_clustered() || self.cluster.leader_term.is_some()
    }
}
