//! Named failure scenarios: each is a workload plus a fault plan for the simulated world
//! of `drongo-io-sim`. `ci/sim.sh` runs them (`list`, `run NAME --seed N`, `sweep NAME
//! --seeds A..B`); CI sweeps every scenario over a few seeds and checks that a run repeats
//! byte for byte.
//!
//! Only built under `RUSTFLAGS="--cfg madsim"`.
#![cfg(madsim)]

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
            spec: owner_crash_in_call,
        },
        Scenario {
            name: "owner-crash-while-ringing",
            about: "a cluster of three: a node is killed while a call it set up rings (transactions local): the adopter settles it, the caller gets a final response, never silence",
            spec: owner_crash_while_ringing,
        },
        Scenario {
            name: "owner-crash-during-reinvite",
            about: "a cluster of three: a node is killed while a re-INVITE of one of its calls is in progress",
            spec: owner_crash_during_reinvite,
        },
        Scenario {
            name: "lb-node-crash-during-reinvite",
            about: "a node is killed behind drongo lb while a re-INVITE of one of its calls is in progress (transactions distributed): the adopter restores the relay, and its sender hears the other party's answer",
            spec: lb_node_crash_during_reinvite,
        },
        Scenario {
            name: "lb-node-rejoin-slow-start",
            about: "a node behind drongo lb is killed under 10 calls/s and back 2-4 s later: the balancer's slow start ramps its share of new calls up (checked: at most a quarter in the ramp's first quarter, its share less four standard deviations after it)",
            spec: lb_node_rejoin_slow_start,
        },
        Scenario {
            name: "hot-standby-takeover",
            about: "owner-crash-in-call with strategy hot-standby: each call's standby follows its record (a polling watch) and takes it over from its copy",
            spec: hot_standby_takeover,
        },
        Scenario {
            name: "store-leader-change-during-takeover",
            about: "owner-crash-in-call while the store changes leader as the survivors take over: write answers lost, then a short outage",
            spec: store_leader_change_during_takeover,
        },
        Scenario {
            name: "paused-owner",
            about: "a cluster of three: a node is cut off from the store and its peers (not its phones) past its lease: it must go silent",
            spec: paused_owner,
        },
        Scenario {
            name: "node-join",
            about: "a fourth member joins a running cluster of three; then a member dies with calls up and the newcomer shares its calls",
            spec: node_join,
        },
        Scenario {
            name: "rolling-restart",
            about: "a cluster of three: each node in turn is stopped gracefully (drain, leave) with calls up, and started again",
            spec: rolling_restart,
        },
        Scenario {
            name: "leader-crash",
            about: "a cluster of three: the leader is killed with calls up, a second member 1-3 s later; the last one leads and adopts every call, those the second left unadopted by the leader's sweep",
            spec: leader_crash,
        },
        Scenario {
            name: "lb-node-crash-under-load",
            about: "owner-crash-in-call behind drongo lb: the phones know one address; the balancer routes a dead node's dialogs to their adopters by the node token, and a node back within its lease gets its calls' requests forwarded by the adopter",
            spec: lb_node_crash_under_load,
        },
        Scenario {
            name: "lb-node-crash-while-ringing",
            about: "a node is killed behind drongo lb while a call it set up rings (transactions distributed): the adopter restores the INVITE transactions, and a call its callee answers completes",
            spec: lb_node_crash_while_ringing,
        },
        Scenario {
            name: "lb-two-balancers",
            about: "lb-node-crash-under-load behind two balancers: each phone's home is one, and each new request in a dialog goes through the other one than the last",
            spec: lb_two_balancers,
        },
        Scenario {
            name: "lb-partition-node",
            about: "a cluster of three behind drongo lb: a node with calls up is cut off from the balancer (not the store) for 10-20 s: probes take it out of new calls (checked), its calls' requests reach it again after the heal",
            spec: lb_partition_node,
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
            name: "cluster-chaos",
            about: "a cluster of three on a lossy network: kills, an isolated node and a store outage in one run",
            spec: cluster_chaos,
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

/// Three nodes in a cluster, each home of four user agents.
fn cluster(faults: Vec<Fault>) -> WorldSpec {
    WorldSpec {
        nodes: 3,
        uas: 12,
        calls: 90,
        workload_ms: 60_000,
        cluster: true,
        faults,
        ..WorldSpec::default()
    }
}

/// The cluster with node 0 killed on `when`, down 0.5-15 s.
fn owner_killed(when: Trigger) -> WorldSpec {
    cluster(vec![Fault::KillNode {
        node: 0,
        when,
        down_ms: (500, 15_000),
    }])
}

fn owner_crash_in_call() -> WorldSpec {
    owner_killed(Trigger::InCallOn {
        node: 0,
        after_ms: 10_000,
    })
}

/// Callees ring 1-8 s, so that some answer after their call's node died.
fn owner_crash_while_ringing() -> WorldSpec {
    WorldSpec {
        ring_ms: (1_000, 8_000),
        ..owner_killed(Trigger::RingingOn {
            node: 0,
            after_ms: 10_000,
        })
    }
}

/// Callees ring 2-10 s and callers wait 20-30 s, so that calls ringing when their node
/// dies are answered after its adopter restored them (detection takes about a lease TTL).
fn lb_node_crash_while_ringing() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        transactions: drongo_core::config::Transactions::Distributed,
        ring_ms: (2_000, 10_000),
        patience_ms: (20_000, 30_000),
        ..owner_crash_while_ringing()
    }
}

fn owner_crash_during_reinvite() -> WorldSpec {
    owner_killed(Trigger::ReinviteOn {
        node: 0,
        after_ms: 10_000,
    })
}

/// A node is killed behind the balancer while a re-INVITE it relayed waits for the other
/// party's answer (parties take 1-6 s to answer one), with distributed transactions: the
/// relay is stored with its transactions, so its adopter carries it on. Calls ringing at
/// the kill are checked too: callers wait as in lb-node-crash-while-ringing.
fn lb_node_crash_during_reinvite() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        transactions: drongo_core::config::Transactions::Distributed,
        patience_ms: (20_000, 30_000),
        reinvite_answer_ms: (1_000, 6_000),
        ..owner_killed(Trigger::ReinviteHeldOn {
            node: 0,
            after_ms: 10_000,
        })
    }
}

/// A node killed at 3 s under ten new calls a second through the balancer, back 2-4 s
/// later under a new incarnation: the balancer's slow start (20 s, so that its first
/// quarter sees some 45 new calls) ramps its share up.
fn lb_node_rejoin_slow_start() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        uas: 20,
        calls: 320,
        workload_ms: 32_000,
        slow_start_ms: Some(20_000),
        busy_nodes: true,
        ..cluster(vec![Fault::KillNode {
            node: 0,
            when: Trigger::At(3_000),
            down_ms: (2_000, 4_000),
        }])
    }
}

/// owner-crash-in-call behind the balancer (the node down 0.5-15 s). A node back within its lease
/// claims its calls again, but the balancer, seeing a new incarnation, sends their requests
/// to the adopter the cluster would have picked: that member forwards them to the live
/// owner (seeds 53, 193 and 300 found this before forwarding was built).
fn lb_node_crash_under_load() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        ..owner_crash_in_call()
    }
}

/// A node the balancer cannot reach but the store still counts alive keeps its calls: the
/// balancer's probes take it out of new calls (checked: no call tried once they must have
/// noticed is set up by it), and its dialogs' requests, lost meanwhile, are answered by it
/// once the link heals (their retransmissions, 32 s, outlast the cut).
fn lb_partition_node() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        ..cluster(vec![Fault::PartitionNodeLb {
            node: 0,
            when: Trigger::InCallOn {
                node: 0,
                after_ms: 10_000,
            },
            for_ms: (10_000, 20_000),
        }])
    }
}

/// Balancers keep nothing per call: a dialog set up through one goes on through the other.
fn lb_two_balancers() -> WorldSpec {
    WorldSpec {
        balancers: 2,
        ..owner_crash_in_call()
    }
}

fn hot_standby_takeover() -> WorldSpec {
    WorldSpec {
        strategy: drongo_core::config::Strategy::HotStandby,
        ..owner_crash_in_call()
    }
}

/// An etcd leader change as the client sees it: writes in flight come back ambiguous (half
/// of them happened), then the cluster answers nothing until the new leader is elected;
/// timed to meet the takeover (the dead owner's lease of 2 s runs out, the survivors see it
/// within a third of that and load its calls).
fn store_leader_change_during_takeover() -> WorldSpec {
    let mut spec = owner_crash_in_call();
    spec.faults.extend([
        Fault::StoreAmbiguous {
            when: Trigger::AfterKill { after_ms: 1_800 },
            for_ms: (500, 1_500),
            rate: 0.5,
        },
        Fault::StoreUnavailable {
            when: Trigger::AfterKill { after_ms: 2_300 },
            for_ms: (200, 800),
        },
    ]);
    spec
}

fn paused_owner() -> WorldSpec {
    cluster(vec![Fault::IsolateNode {
        node: 0,
        when: Trigger::InCallOn {
            node: 0,
            after_ms: 10_000,
        },
        for_ms: (3_000, 15_000),
    }])
}

fn node_join() -> WorldSpec {
    WorldSpec {
        nodes: 4,
        uas: 16,
        faults: vec![
            // The fourth member is down from the start and joins 15-25 s in (its phones
            // register then).
            Fault::KillNode {
                node: 3,
                when: Trigger::At(0),
                down_ms: (15_000, 25_000),
            },
            Fault::KillNode {
                node: 0,
                when: Trigger::InCallOn {
                    node: 0,
                    after_ms: 35_000,
                },
                down_ms: (500, 15_000),
            },
        ],
        ..cluster(Vec::new())
    }
}

fn rolling_restart() -> WorldSpec {
    cluster(
        (0..3)
            .map(|node| Fault::RestartNode {
                node,
                when: Trigger::InCallOn {
                    node,
                    after_ms: 10_000 + node as u64 * 15_000,
                },
                down_ms: (1_000, 5_000),
            })
            .collect(),
    )
}

fn leader_crash() -> WorldSpec {
    WorldSpec {
        // Parties that go silent leave calls whose only way to end is their owner's timers
        // (session expiry): a call nobody adopted would never end.
        vanish: 0.3,
        ..cluster(vec![Fault::KillLeader {
            when: Trigger::InCall { after_ms: 10_000 },
            down_ms: (60_000, 70_000),
            second_after_ms: Some(1_000),
        }])
    }
}

fn cluster_chaos() -> WorldSpec {
    WorldSpec {
        link: LinkFaults {
            loss: 0.03,
            duplicate: 0.02,
            jitter_ms: 50,
        },
        ..cluster(vec![
            Fault::KillNode {
                node: 1,
                when: Trigger::InCallOn {
                    node: 1,
                    after_ms: 10_000,
                },
                down_ms: (500, 10_000),
            },
            Fault::IsolateNode {
                node: 0,
                when: Trigger::InCallOn {
                    node: 0,
                    after_ms: 30_000,
                },
                for_ms: (2_000, 10_000),
            },
            Fault::StoreUnavailable {
                when: Trigger::At(45_000),
                for_ms: (300, 1_500),
            },
            Fault::KillNode {
                node: 2,
                when: Trigger::InCallOn {
                    node: 2,
                    after_ms: 50_000,
                },
                down_ms: (500, 10_000),
            },
        ])
    }
}
