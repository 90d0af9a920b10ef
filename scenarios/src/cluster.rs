//! The cluster's scenarios: three members (four for a join) sharing one store, killed,
//! restarted, paused and cut off, with and without balancers in front.

use drongo_io_sim::link::LinkFaults;
use drongo_io_sim::{Fault, Trigger, WorldSpec};

/// Three nodes in a cluster, each home of four user agents.
pub(crate) fn cluster(faults: Vec<Fault>) -> WorldSpec {
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
pub(crate) fn owner_killed(when: Trigger) -> WorldSpec {
    cluster(vec![Fault::KillNode {
        node: 0,
        when,
        down_ms: (500, 15_000),
    }])
}

pub(crate) fn owner_crash_in_call() -> WorldSpec {
    owner_killed(Trigger::InCallOn {
        node: 0,
        after_ms: 10_000,
    })
}

/// The node dies as a callee's 2xx reaches it: between the call's store write and the
/// messages that write lets go (the caller's 2xx, the callee's ACK), or before either.
pub(crate) fn owner_crash_while_answering() -> WorldSpec {
    owner_killed(Trigger::AnsweringOn {
        node: 0,
        after_ms: 10_000,
    })
}

/// Callees ring 1-8 s, so that some answer after their call's node died.
pub(crate) fn owner_crash_while_ringing() -> WorldSpec {
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
pub(crate) fn lb_node_crash_while_ringing() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        transactions: drongo_core::config::Transactions::Distributed,
        ring_ms: (2_000, 10_000),
        patience_ms: (20_000, 30_000),
        ..owner_crash_while_ringing()
    }
}

pub(crate) fn owner_crash_during_reinvite() -> WorldSpec {
    owner_killed(Trigger::ReinviteOn {
        node: 0,
        after_ms: 10_000,
    })
}

/// A node is killed behind the balancer while a re-INVITE it relayed waits for the other
/// party's answer (parties take 1-6 s to answer one), with distributed transactions: the
/// relay is stored with its transactions, so its adopter carries it on. Calls ringing at
/// the kill are checked too: callers wait as in lb-node-crash-while-ringing.
pub(crate) fn lb_node_crash_during_reinvite() -> WorldSpec {
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
pub(crate) fn lb_node_rejoin_slow_start() -> WorldSpec {
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
pub(crate) fn lb_node_crash_under_load() -> WorldSpec {
    WorldSpec {
        balancers: 1,
        ..owner_crash_in_call()
    }
}

/// A node the balancer cannot reach but the store still counts alive keeps its calls: the
/// balancer's probes take it out of new calls (checked: no call tried once they must have
/// noticed is set up by it), and its dialogs' requests, lost meanwhile, are answered by it
/// once the link heals (their retransmissions, 32 s, outlast the cut).
pub(crate) fn lb_partition_node() -> WorldSpec {
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
pub(crate) fn lb_two_balancers() -> WorldSpec {
    WorldSpec {
        balancers: 2,
        ..owner_crash_in_call()
    }
}

pub(crate) fn hot_standby_takeover() -> WorldSpec {
    WorldSpec {
        strategy: drongo_core::config::Strategy::HotStandby,
        ..owner_crash_in_call()
    }
}

/// An etcd leader change as the client sees it: writes in flight come back ambiguous (half
/// of them happened), then the cluster answers nothing until the new leader is elected;
/// timed to meet the takeover (the dead owner's lease of 2 s runs out, the survivors see it
/// within a third of that and load its calls).
pub(crate) fn store_leader_change_during_takeover() -> WorldSpec {
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

pub(crate) fn paused_owner() -> WorldSpec {
    cluster(vec![Fault::IsolateNode {
        node: 0,
        when: Trigger::InCallOn {
            node: 0,
            after_ms: 10_000,
        },
        for_ms: (3_000, 15_000),
    }])
}

pub(crate) fn node_join() -> WorldSpec {
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

pub(crate) fn rolling_restart() -> WorldSpec {
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

pub(crate) fn leader_crash() -> WorldSpec {
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

pub(crate) fn cluster_chaos() -> WorldSpec {
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
