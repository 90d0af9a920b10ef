//! The distributed registrar's scenarios: pairs of devices share an address-of-record and
//! register it through two members at once; every member must find every binding until it
//! expires, no REGISTER may undo another's (§10.3 as the devices saw it), and the leader's
//! watchdog must clear what expired even across the leader's death.

use drongo_io_sim::{Fault, Trigger, WorldSpec};

/// Three members, six callers and callees, six pairs of devices whose REGISTERs race
/// through two members (the store a little slow, so that they overlap), half of the pairs
/// with a device that stops refreshing halfway.
pub(crate) fn registrar_cluster(faults: Vec<Fault>) -> WorldSpec {
    WorldSpec {
        nodes: 3,
        uas: 6,
        twins: 6,
        calls: 30,
        workload_ms: 60_000,
        cluster: true,
        lapse: 0.5,
        store_latency_ms: (5, 60),
        faults,
        ..WorldSpec::default()
    }
}

pub(crate) fn registrar_concurrent_refresh() -> WorldSpec {
    registrar_cluster(Vec::new())
}

/// A member is killed 25 s in, down 5-15 s: the bindings taken through it stay found
/// through the others (its devices' refreshes go nowhere meanwhile).
pub(crate) fn registrar_node_crash() -> WorldSpec {
    registrar_cluster(vec![Fault::KillNode {
        node: 0,
        when: Trigger::At(25_000),
        down_ms: (5_000, 15_000),
    }])
}

/// The leader is killed 45 s in, as the lapsed devices' bindings start to expire (their
/// last refresh was before 30 s, for 30-120 s), and stays down 20-30 s: the next leader
/// removes what expired meanwhile and after.
pub(crate) fn registrar_leader_crash() -> WorldSpec {
    registrar_cluster(vec![Fault::KillLeader {
        when: Trigger::At(45_000),
        down_ms: (20_000, 30_000),
        second_after_ms: None,
    }])
}

/// Two regions of two members each, each on its own store; phones register, call and are
/// called in their region and look bindings up in both.
fn two_regions(faults: Vec<Fault>) -> WorldSpec {
    WorldSpec {
        nodes: 4,
        uas: 12,
        calls: 60,
        workload_ms: 60_000,
        cluster: true,
        regions: true,
        faults,
        ..WorldSpec::default()
    }
}

/// The link between the regions is cut 20 s in for 10-20 s: each region serves its own
/// phones meanwhile, and the other region finds every binding again within the
/// replication bound after the heal.
pub(crate) fn region_partition() -> WorldSpec {
    two_regions(vec![Fault::CutRegions {
        when: Trigger::At(20_000),
        for_ms: (10_000, 20_000),
    }])
}

/// The regions are cut apart 25-50 s in while half the phones stop refreshing (30 s) and
/// some de-register: after the heal no removed or expired binding comes back in the other
/// region.
pub(crate) fn region_heal() -> WorldSpec {
    WorldSpec {
        lapse: 0.5,
        ..two_regions(vec![Fault::CutRegions {
            when: Trigger::At(25_000),
            for_ms: (20_000, 30_000),
        }])
    }
}
