//! The balancer's view of the nodes: who is alive (its store lease, or its probes when the
//! list is static), who takes new calls (alive, `active`, answering probes) and with what
//! weight (slow start), and who serves a dialog whose node is gone (the rendezvous adopter,
//! as the cluster picks it).

use crate::cluster::{hrw, MemberState};
use crate::UnixMillis;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The weight of a node at full share; a recovering node's ramps up to it.
pub const FULL_WEIGHT: u32 = 1000;

/// Health checks and slow start (HAProxy's defaults: a probe every 2 s, down after 3
/// failures, up after 2 successes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
    /// How long a node that comes back takes to reach its full share of new calls.
    pub slow_start_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: 2000,
            timeout_ms: 1000,
            fall: 3,
            rise: 2,
            slow_start_ms: 10_000,
        }
    }
}

/// One node as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolNode {
    pub id: u16,
    /// Where the balancer reaches it.
    pub addr: SocketAddr,
    /// 0 when the list is static (incarnations unknown).
    pub incarnation: u64,
    pub state: MemberState,
    /// Whether its probes say it answers (`fall` failures in a row: no).
    pub healthy: bool,
    pub fails: u32,
    pub oks: u32,
    /// Since when it takes new calls (the start of its slow start).
    pub up_since: UnixMillis,
    pub routed: u64,
    pub probe_failures: u64,
}

/// Every node the balancer knows, by id.
#[derive(Debug, Clone)]
pub struct Pool {
    pub(crate) cfg: HealthConfig,
    pub(crate) nodes: BTreeMap<u16, PoolNode>,
    /// Members come from the store (leases say who is alive) or from a static list.
    from_store: bool,
}

impl Pool {
    pub fn new(cfg: HealthConfig, from_store: bool) -> Self {
        Self {
            cfg,
            nodes: BTreeMap::new(),
            from_store,
        }
    }

    /// A member as the store (or the static list) describes it now. A new incarnation, or
    /// a node seen for the first time later than one probe interval after `started` (the
    /// balancer's start), begins its slow start; the nodes found within that first interval
    /// (the cluster the balancer fronts, there already or coming up with it) take their
    /// full share. Before, a node had to be seen at `started` itself, which the first read
    /// of the members never is: every node of the cluster began a slow start whenever the
    /// balancer did, and a node back from a crash soon after ramped up against peers still
    /// ramping themselves (`lb-node-rejoin-slow-start`: the mutant balancer whose ramp
    /// never ends gave the node back its full third).
    pub fn upsert(
        &mut self,
        id: u16,
        addr: SocketAddr,
        incarnation: u64,
        state: MemberState,
        now: UnixMillis,
        started: UnixMillis,
    ) {
        let fresh = now.saturating_sub(self.cfg.slow_start_ms);
        match self.nodes.get_mut(&id) {
            Some(n) if n.incarnation == incarnation => {
                n.addr = addr;
                n.state = state;
            }
            Some(n) => {
                *n = PoolNode {
                    up_since: now,
                    routed: n.routed,
                    probe_failures: n.probe_failures,
                    ..new_node(id, addr, incarnation, state, now)
                };
            }
            None => {
                let first_interval = now <= started.saturating_add(self.cfg.interval_ms);
                let up_since = if first_interval { fresh } else { now };
                self.nodes.insert(
                    id,
                    PoolNode {
                        up_since,
                        ..new_node(id, addr, incarnation, state, now)
                    },
                );
            }
        }
    }

    /// A member whose lease is gone.
    pub fn remove(&mut self, id: u16) {
        self.nodes.remove(&id);
    }

    pub fn nodes(&self) -> impl Iterator<Item = &PoolNode> {
        self.nodes.values()
    }

    pub fn node(&self, id: u16) -> Option<&PoolNode> {
        self.nodes.get(&id)
    }

    /// Whether `addr` is where a node of the pool is reached (a message from it is the
    /// node's own).
    pub fn is_node_addr(&self, addr: SocketAddr) -> bool {
        self.nodes.values().any(|n| n.addr == addr)
    }

    pub(crate) fn count_routed(&mut self, id: u16) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.routed += 1;
        }
    }

    /// Alive: it still serves its own dialogs. With a store, while its lease lasts (a node
    /// failing probes keeps its dialogs: it may be only slow); with a static list, while
    /// its probes say so.
    pub fn alive(&self, id: u16) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| self.from_store || n.healthy)
    }

    /// Whether node `id` takes new calls at all (healthy and `active`), whatever its weight
    /// in a slow start.
    pub fn takes_new(&self, id: u16) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.healthy && n.state == MemberState::Active)
    }

    /// The weight of node `n` for new calls at `now` (0: none): alive, `active`, healthy,
    /// and ramping up linearly over the slow start since it came (back).
    pub fn weight(&self, n: &PoolNode, now: UnixMillis) -> u32 {
        if !(n.healthy && n.state == MemberState::Active) {
            return 0;
        }
        let ramp = self.cfg.slow_start_ms;
        let age = now.saturating_sub(n.up_since);
        if ramp == 0 || age >= ramp {
            return FULL_WEIGHT;
        }
        ((u64::from(FULL_WEIGHT) * age / ramp) as u32).max(1)
    }

    /// The node for a new call (or a new transaction outside a dialog) keyed `key`:
    /// rendezvous hashing over the weighted nodes.
    pub fn for_new(&self, key: &str, now: UnixMillis) -> Option<u16> {
        let weighted: Vec<(u16, u32)> = self
            .nodes
            .values()
            .map(|n| (n.id, self.weight(n, now)))
            .collect();
        hrw::choose(key, &weighted)
    }

    /// The node for a message of call `call` whose token names `node` in `incarnation`
    /// (0: unknown): that node while that incarnation lives, else the call's adopter,
    /// chosen as the cluster chooses it (the live members but those draining, equal
    /// weights) without the named node, which is gone or came back without the call.
    pub fn for_dialog(&self, node: u16, incarnation: u64, call: &str) -> Option<u16> {
        if let Some(n) = self.nodes.get(&node) {
            let same = incarnation == 0 || n.incarnation == 0 || n.incarnation == incarnation;
            if same && self.alive(node) {
                return Some(node);
            }
        }
        let adopters: Vec<(u16, u32)> = self
            .nodes
            .values()
            .filter(|n| n.id != node && self.alive(n.id) && n.state != MemberState::Draining)
            .map(|n| (n.id, 1))
            .collect();
        hrw::choose(call, &adopters)
    }

    /// The node for a message that names no node: rendezvous over the live nodes.
    pub fn for_unknown(&self, key: &str) -> Option<u16> {
        let live: Vec<(u16, u32)> = self
            .nodes
            .values()
            .filter(|n| self.alive(n.id))
            .map(|n| (n.id, 1))
            .collect();
        hrw::choose(key, &live)
    }
}

fn new_node(
    id: u16,
    addr: SocketAddr,
    incarnation: u64,
    state: MemberState,
    now: UnixMillis,
) -> PoolNode {
    PoolNode {
        id,
        addr,
        incarnation,
        state,
        healthy: true,
        fails: 0,
        oks: 0,
        up_since: now,
        routed: 0,
        probe_failures: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool3() -> Pool {
        let mut p = Pool::new(HealthConfig::default(), true);
        for id in 1..=3 {
            p.upsert(id, addr(5060 + id), 1, MemberState::Active, 0, 0);
        }
        p
    }

    #[test]
    fn a_restarted_node_ramps_up_over_slow_start() {
        let mut p = pool3();
        p.upsert(2, addr(5062), 2, MemberState::Active, 100_000, 0);
        let share = |p: &Pool, now| {
            (0..6000)
                .filter(|i| p.for_new(&format!("c{i}"), now) == Some(2))
                .count()
        };
        let (early, mid, late) = (share(&p, 100_500), share(&p, 105_000), share(&p, 110_000));
        assert!(early < 200, "{early}");
        assert!((700..1400).contains(&mid), "{mid}");
        assert!((1800..2200).contains(&late), "{late}");
    }

    /// The nodes found in the balancer's first probe interval take their full share at
    /// once; one found later ramps up.
    #[test]
    fn only_nodes_found_after_the_first_interval_slow_start() {
        let cfg = HealthConfig::default();
        let started = 50_000;
        let mut p = Pool::new(cfg, true);
        p.upsert(1, addr(5061), 1, MemberState::Active, started + 3, started);
        p.upsert(
            2,
            addr(5062),
            1,
            MemberState::Active,
            started + cfg.interval_ms,
            started,
        );
        let later = started + cfg.interval_ms + 1;
        p.upsert(3, addr(5063), 1, MemberState::Active, later, started);
        let at = later + 1_000;
        let w: Vec<u32> = p.nodes().map(|n| p.weight(n, at)).collect();
        assert_eq!(w[..2], [FULL_WEIGHT, FULL_WEIGHT]);
        assert!(w[2] < FULL_WEIGHT / 5, "{w:?}");
    }

    #[test]
    fn a_dialog_follows_its_node_then_the_adopter_the_cluster_picks() {
        let mut p = pool3();
        assert_eq!(p.for_dialog(2, 1, "1.call"), Some(2));
        // A draining node keeps its dialogs but takes no new calls.
        p.upsert(2, addr(5062), 1, MemberState::Draining, 10, 0);
        assert_eq!(p.for_dialog(2, 1, "1.call"), Some(2));
        assert!((0..100).all(|i| p.for_new(&format!("c{i}"), 10) != Some(2)));
        let adopter = hrw::choose("1.call", &[(1, 1), (3, 1)]);
        p.remove(2);
        assert_eq!(p.for_dialog(2, 1, "1.call"), adopter);
        // Back with a new incarnation: the call stays with its adopter.
        p.upsert(2, addr(5062), 2, MemberState::Active, 20, 0);
        assert_eq!(p.for_dialog(2, 1, "1.call"), adopter);
    }
}
