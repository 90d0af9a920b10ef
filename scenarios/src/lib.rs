//! Named failure scenarios: each is a workload plus a fault plan for the simulated world
//! of `drongo-io-sim`. `ci/sim.sh` runs them (`list`, `run NAME --seed N`, `sweep NAME
//! --seeds A..B`); CI sweeps every scenario over a few seeds and checks that a run repeats
//! byte for byte.
//!
//! Only built under `RUSTFLAGS="--cfg madsim"`.
#![cfg(madsim)]

mod cluster;
mod registrar;

use drongo_io_sim::link::LinkFaults;
use drongo_io_sim::{Fault, Trigger, WorldSpec};

/// A named scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub spec: fn() -> WorldSpec,
}

/// Every scenario, in the order `list` prints them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "smoke",
            about: "two user agents, a handful of calls, no faults (pinned by a trace snapshot)",
            spec: smoke,
        },
        Scenario {
            name: "smoke-crash",
            about: "smoke, with the node killed while a call is up (pinned by a trace snapshot)",
            spec: smoke_crash,
        },
        Scenario {
            name: "smoke-store-outage",
            about: "smoke, with the store unavailable for 2-4 s (pinned by a trace snapshot)",
            spec: smoke_store_outage,
        },
        Scenario {
            name: "steady",
            about: "no faults: a few hundred calls and registrations on one node",
            spec: steady,
        },
        Scenario {
            name: "lossy-network",
            about: "UDP between user agents and Drongo loses 5%, duplicates 3%, reorders (0-80 ms jitter)",
            spec: lossy_network,
        },
        Scenario {
            name: "node-crash-during-ringing",
            about: "the node is killed while a call rings, restarted 1-5 s later",
            spec: node_crash_during_ringing,
        },
        Scenario {
            name: "node-crash-in-call",
            about: "the node is killed while calls are up, restarted 1-8 s later",
            spec: node_crash_in_call,
        },
        Scenario {
            name: "node-crash-during-reinvite",
            about: "the node is killed while a re-INVITE is in progress, restarted 0.5-4 s later",
            spec: node_crash_during_reinvite,
        },
        Scenario {
            name: "store-outage",
            about: "the store answers 'no leader' for 1-8 s, twice",
            spec: store_outage,
        },
        Scenario {
            name: "store-leader-changes",
            about: "the store changes leader six times (0.1-1.5 s of 'retry' each)",
            spec: store_leader_changes,
        },
        Scenario {
            name: "slow-store",
            about: "every store request takes 20-150 ms",
            spec: slow_store,
        },
        Scenario {
            name: "store-ambiguous-writes",
            about: "the store loses 20% of write answers (half of those writes happened) for 40 s",
            spec: store_ambiguous_writes,
        },
        Scenario {
            name: "partition-node-store",
            about: "the node is cut off from the store for 1-12 s, then healed",
            spec: partition_node_store,
        },
        Scenario {
            name: "partition-node-uas",
            about: "the node is cut off from every user agent for 1-10 s, then healed",
            spec: partition_node_uas,
        },
        Scenario {
            name: "chaos",
            about: "lossy network, a node crash, a store outage, lost write answers and partitions in one run",
            spec: chaos,
        },
        Scenario {
            name: "clock-skew",
            about: "two nodes whose clocks differ by up to 2 s; each restarts with a new offset",
            spec: clock_skew,
        },
        Scenario {
            name: "owner-crash-in-call",
            about: "a cluster of three: a node is killed while its calls are up, restarted 0.5-15 s later; survivors adopt its calls",
            spec: cluster::owner_crash_in_call,
        },
        Scenario {
            name: "owner-crash-while-answering",
            about: "a cluster of three: a node is killed as a callee's 2xx reaches it, between the call's write and the messages it lets go: the adopter ACKs the callee (its 2xx copies go to the dead node) and the call goes on",
            spec: cluster::owner_crash_while_answering,
        },
        Scenario {
            name: "owner-crash-while-ringing",
            about: "a cluster of three: a node is killed while a call it set up rings (transactions local): the adopter settles it, the caller gets a final response, never silence",
            spec: cluster::owner_crash_while_ringing,
        },
        Scenario {
            name: "owner-crash-during-reinvite",
            about: "a cluster of three: a node is killed while a re-INVITE of one of its calls is in progress",
            spec: cluster::owner_crash_during_reinvite,
        },
        Scenario {
            name: "lb-node-crash-during-reinvite",
            about: "a node is killed behind drongo lb while a re-INVITE of one of its calls is in progress (transactions distributed): the adopter restores the relay, and its sender hears the other party's answer",
            spec: cluster::lb_node_crash_during_reinvite,
        },
        Scenario {
            name: "lb-node-rejoin-slow-start",
            about: "a node behind drongo lb is killed under 10 calls/s and back 2-4 s later: the balancer's slow start ramps its share of new calls up (checked: at most a quarter in the ramp's first quarter, its share less four standard deviations after it)",
            spec: cluster::lb_node_rejoin_slow_start,
        },
        Scenario {
            name: "hot-standby-takeover",
            about: "owner-crash-in-call with strategy hot-standby: each call's standby follows its record (a polling watch) and takes it over from its copy",
            spec: cluster::hot_standby_takeover,
        },
        Scenario {
            name: "store-leader-change-during-takeover",
            about: "owner-crash-in-call while the store changes leader as the survivors take over: write answers lost, then a short outage",
            spec: cluster::store_leader_change_during_takeover,
        },
        Scenario {
            name: "paused-owner",
            about: "a cluster of three: a node is cut off from the store and its peers (not its phones) past its lease: it must go silent",
            spec: cluster::paused_owner,
        },
        Scenario {
            name: "node-join",
            about: "a fourth member joins a running cluster of three; then a member dies with calls up and the newcomer shares its calls",
            spec: cluster::node_join,
        },
        Scenario {
            name: "rolling-restart",
            about: "a cluster of three: each node in turn is stopped gracefully (drain, leave) with calls up, and started again",
            spec: cluster::rolling_restart,
        },
        Scenario {
            name: "leader-crash",
            about: "a cluster of three: the leader is killed with calls up, a second member 1-3 s later; the last one leads and adopts every call, those the second left unadopted by the leader's sweep",
            spec: cluster::leader_crash,
        },
        Scenario {
            name: "lb-node-crash-under-load",
            about: "owner-crash-in-call behind drongo lb: the phones know one address; the balancer routes a dead node's dialogs to their adopters by the node token, and a node back within its lease gets its calls' requests forwarded by the adopter",
            spec: cluster::lb_node_crash_under_load,
        },
        Scenario {
            name: "lb-node-crash-while-ringing",
            about: "a node is killed behind drongo lb while a call it set up rings (transactions distributed): the adopter restores the INVITE transactions, and a call its callee answers completes",
            spec: cluster::lb_node_crash_while_ringing,
        },
        Scenario {
            name: "lb-two-balancers",
            about: "lb-node-crash-under-load behind two balancers: each phone's home is one, and each new request in a dialog goes through the other one than the last",
            spec: cluster::lb_two_balancers,
        },
        Scenario {
            name: "lb-partition-node",
            about: "a cluster of three behind drongo lb: a node with calls up is cut off from the balancer (not the store) for 10-20 s: probes take it out of new calls (checked), its calls' requests reach it again after the heal",
            spec: cluster::lb_partition_node,
        },
        Scenario {
            name: "registrar-concurrent-refresh",
            about: "a cluster of three: pairs of devices share an address-of-record and refresh it through two members at once; what each 200 lists is checked against the other device's grants (§10.3, no lost update), and the leader's watchdog clears lapsed bindings",
            spec: registrar::registrar_concurrent_refresh,
        },
        Scenario {
            name: "registrar-node-crash",
            about: "registrar-concurrent-refresh with a member killed 25 s in for 5-15 s: the bindings taken through it are found through the others until they expire",
            spec: registrar::registrar_node_crash,
        },
        Scenario {
            name: "registrar-leader-crash",
            about: "registrar-concurrent-refresh with the leader killed as lapsed bindings expire: the next leader's watchdog removes them, each within two lease TTLs and 1.5 s of its expiry",
            spec: registrar::registrar_leader_crash,
        },
        Scenario {
            name: "region-partition",
            about: "two regions of two members, each on its own store: the link between them is cut for 10-20 s; each serves its phones, and lookups in the other region find every binding within the replication bound, before the cut and after the heal",
            spec: registrar::region_partition,
        },
        Scenario {
            name: "region-heal",
            about: "two regions cut apart for 20-30 s while half the phones stop refreshing and some de-register: after the heal no removed or expired binding comes back in the other region",
            spec: registrar::region_heal,
        },
        Scenario {
            name: "cluster-chaos",
            about: "a cluster of three on a lossy network: kills, an isolated node and a store outage in one run",
            spec: cluster::cluster_chaos,
        },
    ]
}

pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

fn smoke() -> WorldSpec {
    WorldSpec {
        uas: 2,
        // Enough that a call is up in every seed (the crash and outage variants strike
        // while one is: a fault without its trigger fails the run as vacuous).
        calls: 10,
        workload_ms: 30_000,
        vanish: 0.0,
        lapse: 0.0,
        session_expires_secs: 30,
        ..WorldSpec::default()
    }
}

fn smoke_crash() -> WorldSpec {
    WorldSpec {
        faults: vec![Fault::KillNode {
            node: 0,
            when: Trigger::InCall { after_ms: 5_000 },
            down_ms: (1_000, 3_000),
        }],
        ..smoke()
    }
}

fn smoke_store_outage() -> WorldSpec {
    WorldSpec {
        faults: vec![Fault::StoreUnavailable {
            when: Trigger::InCall { after_ms: 5_000 },
            for_ms: (2_000, 4_000),
        }],
        ..smoke()
    }
}

fn steady() -> WorldSpec {
    WorldSpec {
        uas: 16,
        calls: 300,
        workload_ms: 300_000,
        ..WorldSpec::default()
    }
}

fn lossy_network() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 90_000,
        link: LinkFaults {
            loss: 0.05,
            duplicate: 0.03,
            jitter_ms: 80,
        },
        ..WorldSpec::default()
    }
}

fn crash(when: Trigger, down_ms: (u64, u64)) -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        faults: vec![Fault::KillNode {
            node: 0,
            when,
            down_ms,
        }],
        ..WorldSpec::default()
    }
}

fn node_crash_during_ringing() -> WorldSpec {
    crash(Trigger::Ringing { after_ms: 10_000 }, (1_000, 5_000))
}

fn node_crash_in_call() -> WorldSpec {
    crash(Trigger::InCall { after_ms: 15_000 }, (1_000, 8_000))
}

fn node_crash_during_reinvite() -> WorldSpec {
    crash(Trigger::Reinvite { after_ms: 10_000 }, (500, 4_000))
}

fn store_outage() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        faults: vec![
            Fault::StoreUnavailable {
                when: Trigger::At(15_000),
                for_ms: (1_000, 8_000),
            },
            Fault::StoreUnavailable {
                when: Trigger::InCall { after_ms: 40_000 },
                for_ms: (1_000, 8_000),
            },
        ],
        ..WorldSpec::default()
    }
}

fn store_ambiguous_writes() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        faults: vec![Fault::StoreAmbiguous {
            when: Trigger::At(5_000),
            for_ms: (40_000, 40_000),
            rate: 0.2,
        }],
        ..WorldSpec::default()
    }
}

fn store_leader_changes() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        faults: (0..6)
            .map(|i| Fault::StoreUnavailable {
                when: Trigger::At(8_000 + i * 8_000),
                for_ms: (100, 1_500),
            })
            .collect(),
        ..WorldSpec::default()
    }
}

fn slow_store() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        store_latency_ms: (20, 150),
        ..WorldSpec::default()
    }
}

fn chaos() -> WorldSpec {
    WorldSpec {
        uas: 10,
        calls: 80,
        workload_ms: 80_000,
        link: LinkFaults {
            loss: 0.03,
            duplicate: 0.02,
            jitter_ms: 50,
        },
        faults: vec![
            Fault::KillNode {
                node: 0,
                when: Trigger::InCall { after_ms: 10_000 },
                down_ms: (500, 5_000),
            },
            Fault::StoreUnavailable {
                when: Trigger::At(25_000),
                for_ms: (500, 6_000),
            },
            Fault::StoreAmbiguous {
                when: Trigger::At(35_000),
                for_ms: (10_000, 20_000),
                rate: 0.2,
            },
            Fault::PartitionNodeStore {
                node: 0,
                when: Trigger::Reinvite { after_ms: 55_000 },
                for_ms: (500, 8_000),
            },
            Fault::PartitionNodeUas {
                node: 0,
                when: Trigger::At(70_000),
                for_ms: (500, 5_000),
            },
        ],
        ..WorldSpec::default()
    }
}

fn partition_node_store() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        faults: vec![Fault::PartitionNodeStore {
            node: 0,
            when: Trigger::InCall { after_ms: 15_000 },
            for_ms: (1_000, 12_000),
        }],
        ..WorldSpec::default()
    }
}

fn partition_node_uas() -> WorldSpec {
    WorldSpec {
        uas: 8,
        calls: 60,
        workload_ms: 60_000,
        faults: vec![Fault::PartitionNodeUas {
            node: 0,
            when: Trigger::InCall { after_ms: 15_000 },
            for_ms: (1_000, 10_000),
        }],
        ..WorldSpec::default()
    }
}

fn clock_skew() -> WorldSpec {
    WorldSpec {
        nodes: 2,
        uas: 10,
        calls: 60,
        workload_ms: 60_000,
        skew_bound_ms: 2_000,
        faults: vec![
            Fault::KillNode {
                node: 0,
                when: Trigger::InCall { after_ms: 15_000 },
                down_ms: (500, 3_000),
            },
            Fault::KillNode {
                node: 1,
                when: Trigger::InCall { after_ms: 35_000 },
                down_ms: (500, 3_000),
            },
        ],
        ..WorldSpec::default()
    }
}
