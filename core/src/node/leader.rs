//! The leader's chore (see `cluster::Leader`): calls whose owner is gone and that nobody
//! adopted are swept up by the member that leads the cluster.

use super::Node;
use crate::config::Strategy;
use crate::store::{call_key, Key, StoredRecord};
use crate::UnixMillis;
use std::collections::{BTreeMap, BTreeSet};

impl Node {
    /// Whether this node leads the cluster, and in which term (`None`: it does not): the
    /// leader sweeps up calls nobody adopted ([`Node::handle_sweep`]).
    pub fn handle_leader(&mut self, now: UnixMillis, term: Option<u64>) {
        self.now = now;
        if term != self.cluster.leader_term {
            // A sweep's claims belong to the term that swept.
            self.cluster.swept.clear();
        }
        if term.is_none() {
            self.cluster.orphans.clear();
        }
        if term.is_some() && self.cluster.leader_term.is_none() {
            // The registration watchdog is ours now, for what expired before, too.
            self.registrar.reindex_all();
        }
        self.cluster.leader_term = term;
        // Flows on members that left before this term are this leader's to clear too.
        self.remove_dead_flows(now);
    }

    /// The leader's chore, on the periodic sweep's view of every call record: a call whose
    /// owner is gone and that nobody adopted is loaded and taken over here. Rendezvous
    /// hashing gives every such call an adopter when its owner leaves, but an adopter can
    /// die before it loads the call, or see a different member list (a member draining,
    /// one joining): such a call would wait for someone to speak on it, and its timers
    /// (session expiry, maximum duration) would not fire. A call qualifies once its owner
    /// has been gone for three lease TTLs, or when the last sweep saw it unadopted at the
    /// same version. The takeover is the usual compare-and-swap, so an adopter that got
    /// there first, or an earlier leader still at work, makes it fail harmlessly.
    pub(super) fn sweep_orphans(&mut self, records: &[StoredRecord], loading: &BTreeSet<String>) {
        if self.cluster.leader_term.is_none() || self.sink.cfg.cluster.strategy == Strategy::None {
            return;
        }
        if self.cluster.members.is_none() {
            return;
        }
        let now = self.now;
        let grace = 3 * self.sink.cfg.cluster.lease_ttl_ms;
        let me = self.sink.node_id;
        let mut seen = BTreeMap::new();
        let mut adopt = Vec::new();
        for r in records.iter().filter(|r| r.is_live(now)) {
            let Some(Key::Call(id)) = Key::parse(&r.key) else {
                continue;
            };
            let owner = crate::b2bua::owner_of(&r.value);
            let orphan = owner != 0
                && owner != me
                && !self.owner_alive(&r.value)
                && crate::b2bua::Tombstone::parse(&r.value).is_none()
                && !self.b2bua.holds(id)
                && !loading.contains(id);
            if !orphan {
                continue;
            }
            let long_gone = self
                .cluster
                .gone_since
                .get(&owner)
                .is_some_and(|t| now >= t + grace);
            let seen_before = self.cluster.orphans.get(id) == Some(&r.version);
            if long_gone || seen_before {
                adopt.push(id.to_string());
            } else {
                seen.insert(id.to_string(), r.version);
            }
        }
        self.cluster.orphans = seen;
        self.cluster.swept.retain(|id| loading.contains(id));
        for id in adopt {
            self.sink.metrics.orphans_adopted += 1;
            self.cluster.swept.insert(id.clone());
            self.load(call_key(&id), &id);
        }
    }
}
