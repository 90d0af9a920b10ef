//! Two regions (`WorldSpec::regions`): the first half of the nodes is region `a` on the
//! first store, the second half region `b` on a second store. Each region's leader copies
//! its registrations into the other region's store (`drongo::runtime::replicate`) through
//! a store client of its own; `Fault::CutRegions` cuts every node off from the other
//! region's store (the link between the regions), then heals it.

use super::*;

/// The regions' names, as `[cluster] region` gives them.
pub(super) const NAMES: [&str; 2] = ["a", "b"];

/// How long after a change, with the regions linked, the other region must see it: the
/// follower's copy, the other members' watch (a 200 ms poll here), and after a heal the
/// follower's retry (every 500 ms, behind a store call that may time out after 1 s).
pub const REPLICATION_BOUND_MS: u64 = 4_000;

/// The region of node `i` of `nodes` (always `a` with one region).
pub(super) fn region_of(spec: &WorldSpec, i: usize) -> usize {
    usize::from(spec.regions && i >= spec.nodes / 2)
}

/// The store of region `r`.
pub(super) fn store_addr_of(r: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + r as u8)), STORE_PORT)
}

/// Starts region `b`'s store (region `a`'s is the world's first).
pub(super) fn second_store(
    handle: &Handle,
    spec: &WorldSpec,
    seed: u64,
    trace: &Trace,
) -> (StoreServer, NodeId) {
    let server = StoreServer::new(seed ^ 0xb, trace.clone());
    server.set_faults(|f| f.latency_ms = spec.store_latency_ms);
    let s = server.clone();
    let node = handle
        .create_node()
        .name("store-b")
        .ip(store_addr_of(1).ip())
        .init(move || s.clone().serve(store_addr_of(1)))
        .build();
    (server, node.id())
}

/// The other regions' stores for a node of region `r`, each through a client of its own
/// (made inside the node, so that cutting the node's link to that store cuts it).
pub(super) async fn peers(spec: &WorldSpec, r: usize) -> Vec<(String, SimStore)> {
    if !spec.regions || spec.mutant_no_replication {
        return Vec::new();
    }
    let other = 1 - r;
    let mutants = crate::mutants::RegMutants {
        kept_copies: spec.mutant_kept_copies,
        ..Default::default()
    };
    match SimStore::connect(store_addr_of(other), History::default()).await {
        Ok(s) => vec![(NAMES[other].to_string(), s.with_reg_mutants(mutants))],
        Err(_) => Vec::new(),
    }
}

impl FaultCtx {
    /// `Fault::CutRegions`: every node is cut off from the other region's store.
    pub(super) async fn cut_regions(&mut self, who: &str, when: Trigger, for_ms: (u64, u64)) {
        self.wait(when).await;
        let d = draw(&mut self.rng, for_ms);
        let half = self.nodes.len() / 2;
        let links: Vec<(NodeId, NodeId)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let other = usize::from(i < half);
                self.region_stores.get(other).map(|s| (*n, *s))
            })
            .collect();
        let net = NetSim::current();
        self.trace
            .log(who, format_args!("cuts the regions apart for {d} ms"));
        self.ledger.lock().region_cuts.push((now_ms(), None));
        for (a, b) in &links {
            net.clog_link(*a, *b);
            net.clog_link(*b, *a);
        }
        madsim::time::sleep(Duration::from_millis(d)).await;
        for (a, b) in &links {
            net.unclog_link(*a, *b);
            net.unclog_link(*b, *a);
        }
        if let Some(cut) = self.ledger.lock().region_cuts.last_mut() {
            cut.1 = Some(now_ms());
        }
        self.trace.log(who, "heals the link between the regions");
    }
}
