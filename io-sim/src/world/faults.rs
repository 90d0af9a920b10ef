//! The fault plan: what can go wrong, when it strikes, and how it is inflicted on the
//! simulated world (kills, partitions, store outages, clock skew).

use super::*;

/// When a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// At this simulated time (milliseconds from the start).
    At(u64),
    /// As soon as some caller hears ringing and no final answer yet, after this time.
    Ringing { after_ms: u64 },
    /// As soon as a call set up by `node` (its callee's Call-ID names it) rings.
    RingingOn { node: usize, after_ms: u64 },
    /// As soon as the callee of a call set up by `node` has sent its 2xx, which has not
    /// reached the caller yet: the node is between its store write and its messages.
    AnsweringOn { node: usize, after_ms: u64 },
    /// As soon as some call is confirmed, after this time.
    InCall { after_ms: u64 },
    /// As soon as a call whose caller's home is `node` is confirmed, after this time.
    InCallOn { node: usize, after_ms: u64 },
    /// As soon as a re-INVITE is in progress, after this time.
    Reinvite { after_ms: u64 },
    /// As soon as a re-INVITE is in progress in a call that `node` set up (its B-leg).
    ReinviteOn { node: usize, after_ms: u64 },
    /// As soon as a re-INVITE in a call that `node` set up has reached the other party,
    /// which has not answered it yet (`WorldSpec::reinvite_answer_ms`).
    ReinviteHeldOn { node: usize, after_ms: u64 },
    /// This long after the first node was killed or stopped (a fault timed to meet the
    /// takeover that follows).
    AfterKill { after_ms: u64 },
}

/// One fault of a plan. Durations are drawn from the ranges with the run's seed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Kill a Drongo node (it loses everything not in the store) and restart it later;
    /// it comes back with a new clock offset within the skew bound.
    KillNode {
        node: usize,
        when: Trigger,
        down_ms: (u64, u64),
    },
    /// Kill the cluster's leader (whichever node holds the `leader` record when the trigger
    /// comes), and `second_after_ms` later one more member, both down for `down_ms` (long
    /// enough for the checks: while they are down, every call they owned must be adopted
    /// within a bound, and a survivor must lead with a larger term).
    KillLeader {
        when: Trigger,
        down_ms: (u64, u64),
        second_after_ms: Option<u64>,
    },
    /// Stop a Drongo node gracefully (SIGTERM: it drains its transactions, writes what it
    /// holds and, in a cluster, leaves it at once) and start it again later.
    RestartNode {
        node: usize,
        when: Trigger,
        down_ms: (u64, u64),
    },
    /// The store answers every request "retry" (no leader) for a while.
    StoreUnavailable { when: Trigger, for_ms: (u64, u64) },
    /// Write answers are lost with probability `rate` (half of those writes happened).
    StoreAmbiguous {
        when: Trigger,
        for_ms: (u64, u64),
        rate: f64,
    },
    /// Cut the network between a Drongo node and the store, then heal it.
    PartitionNodeStore {
        node: usize,
        when: Trigger,
        for_ms: (u64, u64),
    },
    /// The store loses every record: a disaster Drongo cannot survive, used to show that
    /// the invariants notice lost state.
    WipeStore { when: Trigger },
    /// Cut a cluster member off from the store and the other nodes (not from its user
    /// agents) for a while, then heal it: past its lease it must be silent, its calls are
    /// adopted, and it joins again with a new incarnation.
    IsolateNode {
        node: usize,
        when: Trigger,
        for_ms: (u64, u64),
    },
    /// Cut the regions apart (every node from the other region's store: the replication
    /// link), then heal them.
    CutRegions { when: Trigger, for_ms: (u64, u64) },
    /// Cut a node off from every user agent (but not from the store), then heal it.
    PartitionNodeUas {
        node: usize,
        when: Trigger,
        for_ms: (u64, u64),
    },
    /// Cut a node off from the balancers (not from the store, its peers or the user
    /// agents), then heal it: the balancers' probes must take it out of new calls, and
    /// its calls' requests reach it again after the heal.
    PartitionNodeLb {
        node: usize,
        when: Trigger,
        for_ms: (u64, u64),
    },
}

/// What a trigger waits for.
type Condition = Box<dyn Fn(&Ledger) -> bool + Send>;

pub(super) struct FaultCtx {
    pub(super) trace: Trace,
    pub(super) ledger: Ledger,
    pub(super) server: StoreServer,
    pub(super) nodes: Vec<NodeId>,
    pub(super) uas: Vec<NodeId>,
    pub(super) lbs: Vec<NodeId>,
    pub(super) store: NodeId,
    /// With two regions, each region's store.
    pub(super) region_stores: Vec<NodeId>,
    pub(super) book: Arc<Mutex<NodeBook>>,
    pub(super) skew: u64,
    pub(super) rng: ChaCha8Rng,
    /// The mutant of `WorldSpec::mutant_forget_calls`.
    pub(super) forget_calls: bool,
    /// The mutant of `WorldSpec::mutant_reused_term`.
    pub(super) reuse_term: bool,
    pub(super) lease_ttl_ms: u64,
}

impl FaultCtx {
    /// Waits for `when`; counts the fault as struck, and whether its trigger was met.
    pub(super) async fn wait(&self, when: Trigger) {
        let met = self.wait_for(when).await;
        let mut l = self.ledger.lock();
        l.counts.faults_struck += 1;
        l.counts.triggers_met += u64::from(met);
    }

    async fn wait_for(&self, when: Trigger) -> bool {
        let (after, cond): (u64, Condition) = match when {
            Trigger::At(t) => (t, Box::new(|_| true)),
            Trigger::Ringing { after_ms } => (after_ms, Box::new(Ledger::any_ringing)),
            Trigger::RingingOn { node, after_ms } => (
                after_ms,
                Box::new(move |l| !l.ringing_on(node_id(node)).is_empty()),
            ),
            Trigger::AnsweringOn { node, after_ms } => {
                (after_ms, Box::new(move |l| l.answering_on(node_id(node))))
            }
            Trigger::InCall { after_ms } => (after_ms, Box::new(|l| l.confirmed_calls() > 0)),
            Trigger::InCallOn { node, after_ms } => {
                (after_ms, Box::new(move |l| l.confirmed_calls_on(node) > 0))
            }
            Trigger::Reinvite { after_ms } => (after_ms, Box::new(Ledger::any_reinvite)),
            Trigger::ReinviteOn { node, after_ms } => (
                after_ms,
                Box::new(move |l| !l.reinviting_on(node_id(node)).is_empty()),
            ),
            Trigger::ReinviteHeldOn { node, after_ms } => (
                after_ms,
                Box::new(move |l| l.reinvite_held_on(node_id(node))),
            ),
            Trigger::AfterKill { after_ms } => (
                0,
                Box::new(move |l| {
                    let at = l.lock().first_kill_at;
                    at.is_some_and(|k| sim_ms() >= k + after_ms)
                }),
            ),
        };
        let now = sim_ms();
        if after > now {
            madsim::time::sleep(Duration::from_millis(after - now)).await;
        }
        // Give up on a condition that never comes (the run still has to end).
        for _ in 0..30_000 {
            if cond(&self.ledger) {
                return true;
            }
            madsim::time::sleep(Duration::from_millis(10)).await;
        }
        self.trace
            .log("fault", "trigger never came; striking anyway");
        false
    }

    /// Cuts drongo`node` off from `others` (both ways) for a while, then heals it.
    async fn partition(
        &mut self,
        who: &str,
        node: usize,
        when: Trigger,
        for_ms: (u64, u64),
        others: &[NodeId],
        what: &str,
    ) {
        self.partition_with(who, node, when, for_ms, others, what, || {}, || {})
            .await
    }

    /// `partition`, calling `cut` and `healed` when it is cut and healed.
    #[allow(clippy::too_many_arguments)]
    async fn partition_with(
        &mut self,
        who: &str,
        node: usize,
        when: Trigger,
        for_ms: (u64, u64),
        others: &[NodeId],
        what: &str,
        cut: impl FnOnce(),
        healed: impl FnOnce(),
    ) {
        self.wait(when).await;
        let d = draw(&mut self.rng, for_ms);
        let Some(id) = self.nodes.get(node).copied() else {
            return;
        };
        let net = NetSim::current();
        self.trace.log(
            who,
            format_args!("partitions drongo{} from {what} for {d} ms", node + 1),
        );
        for other in others {
            net.clog_link(id, *other);
            net.clog_link(*other, id);
        }
        cut();
        madsim::time::sleep(Duration::from_millis(d)).await;
        for other in others {
            net.unclog_link(id, *other);
            net.unclog_link(*other, id);
        }
        healed();
        self.trace.log(who, "heals the partition");
    }

    /// What a kill and a stop share: waits for `when`, draws the time the node stays down,
    /// counts the calls up at that moment; the node's madsim id and the time down.
    async fn take_down(
        &mut self,
        node: usize,
        when: Trigger,
        down_ms: (u64, u64),
    ) -> Option<(NodeId, u64)> {
        self.wait(when).await;
        let down = draw(&mut self.rng, down_ms);
        let id = self.nodes.get(node).copied()?;
        self.killed(node);
        Some((id, down))
    }

    /// Counts the calls up as node `node` goes down, notes those ringing on it or in a
    /// re-INVITE on it, and the first kill's time.
    fn killed(&self, node: usize) {
        let up = self.ledger.confirmed_calls() as u64;
        let ringing = self.ledger.ringing_on(node_id(node));
        let reinviting = self.ledger.reinviting_on(node_id(node));
        let mut l = self.ledger.lock();
        l.counts.calls_up_at_kills += up;
        l.counts.ringing_at_kills += ringing.len() as u64;
        l.ringing_at_kills.extend(ringing);
        l.counts.reinvites_at_kills += reinviting.len() as u64;
        for (token, answered) in reinviting {
            l.reinviting_at_kills.entry(token).or_insert(answered);
        }
        l.first_kill_at.get_or_insert(sim_ms());
    }

    /// Restarts a killed node with a new clock offset (after erasing the calls, for the
    /// forgetful mutant).
    async fn bring_back(&mut self, who: &str, node: usize, id: NodeId) {
        let offset = offset(&mut self.rng, self.skew);
        if let Some(o) = self
            .book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offsets
            .get_mut(node)
        {
            *o = offset;
        }
        if self.forget_calls {
            self.erase(who, drongo_core::store::CALL_PREFIX).await;
        }
        self.trace
            .log(who, format_args!("restarts drongo{}", node + 1));
        self.ledger.lock().restarts.push((node_id(node), now_ms()));
        Handle::current().restart(id);
    }

    /// The leader record: the node (index) that leads and its term.
    async fn leader(&self) -> Option<(usize, u64)> {
        let r = self
            .server
            .data
            .get(drongo_core::store::LEADER_KEY, sim_ms())
            .await
            .ok()??;
        let l = drongo_core::cluster::Leader::decode(&r.value)?;
        Some((usize::from(l.node).checked_sub(1)?, l.term))
    }

    /// The mutant of `WorldSpec::mutant_reused_term`: the term counter one back, so that
    /// the next leader is handed the dead one's term.
    async fn rewind_term(&self) {
        let key = drongo_core::store::LEADER_TERM_KEY;
        let Ok(Some(r)) = self.server.data.get(key, sim_ms()).await else {
            return;
        };
        let back = match r.version {
            0 | 1 => drongo_core::store::StoreWrite::Delete {
                key: key.to_string(),
                expect: r.version,
            },
            v => drongo_core::store::StoreWrite::Put {
                key: key.to_string(),
                value: Vec::new(),
                version: v - 1,
                expect: Some(v),
                expires_at: None,
            },
        };
        let _ = self.server.data.apply(vec![back], sim_ms()).await;
        self.trace.log("mutant", "term counter moved back by one");
    }

    /// `Fault::KillLeader`.
    async fn kill_leader(
        &mut self,
        who: &str,
        when: Trigger,
        down_ms: (u64, u64),
        second_after_ms: Option<u64>,
    ) {
        self.wait(when).await;
        let Some((leader, term)) = self.leader().await else {
            self.trace.violation(who, "no leader to kill");
            return;
        };
        let down = draw(&mut self.rng, down_ms);
        let mut killed = vec![leader];
        if second_after_ms.is_some() {
            let other = (0..self.nodes.len()).find(|i| *i != leader);
            killed.extend(other);
        }
        for (k, node) in killed.iter().enumerate() {
            if k > 0 {
                let after = second_after_ms.unwrap_or(0);
                madsim::time::sleep(Duration::from_millis(after)).await;
            }
            self.killed(*node);
            self.trace.log(
                who,
                format_args!(
                    "kills drongo{} (leader of term {term}: {}) for {down} ms",
                    node + 1,
                    k == 0
                ),
            );
            if let Some(id) = self.nodes.get(*node) {
                Handle::current().kill(*id);
            }
        }
        if self.reuse_term {
            self.rewind_term().await;
        }
        // Rendezvous hashing gives every call of the dead an adopter; the leader's sweep
        // (every 30 s) takes what an adopter that died too left behind.
        let bound = 3 * self.lease_ttl_ms + 40_000;
        madsim::time::sleep(Duration::from_millis(bound)).await;
        self.check_adopted(who, &killed, bound).await;
        match self.leader().await {
            Some((node, t)) if t > term && !killed.contains(&node) => self
                .trace
                .log(who, format_args!("drongo{} leads with term {t}", node + 1)),
            other => self.trace.violation(
                who,
                format_args!("no new leader after the leader of term {term} died: {other:?}"),
            ),
        }
        let rest = down.saturating_sub(bound + second_after_ms.unwrap_or(0));
        madsim::time::sleep(Duration::from_millis(rest)).await;
        for node in killed {
            if let Some(id) = self.nodes.get(node).copied() {
                self.bring_back(who, node, id).await;
            }
        }
    }

    /// No call record (tombstones aside) names one of the `dead` nodes as its owner.
    async fn check_adopted(&self, who: &str, dead: &[usize], bound: u64) {
        let now = sim_ms();
        let records = self
            .server
            .data
            .scan(drongo_core::store::CALL_PREFIX, usize::MAX, now)
            .await
            .unwrap_or_default();
        let owner = |r: &drongo_core::store::StoredRecord| {
            usize::from(drongo_core::b2bua::owner_of(&r.value)).checked_sub(1)
        };
        let left: Vec<&str> = records
            .iter()
            .filter(|r| r.expires_at.is_none() && owner(r).is_some_and(|o| dead.contains(&o)))
            .map(|r| r.key.as_str())
            .collect();
        if left.is_empty() {
            self.trace.log(
                who,
                format_args!("every call of the dead adopted within {bound} ms"),
            );
        } else {
            self.trace.violation(
                who,
                format_args!(
                    "{} calls of the dead not adopted within {bound} ms: {left:?}",
                    left.len()
                ),
            );
        }
    }

    /// Deletes every record under `prefix` from the store.
    async fn erase(&self, who: &str, prefix: &str) {
        let records = self
            .server
            .data
            .scan(prefix, usize::MAX, 0)
            .await
            .unwrap_or_default();
        self.trace.log(
            who,
            format_args!(
                "wipes the store of {} records under '{prefix}'",
                records.len()
            ),
        );
        let deletes = records
            .into_iter()
            .map(|r| drongo_core::store::StoreWrite::Delete {
                key: r.key,
                expect: r.version,
            })
            .collect();
        let _ = self.server.data.apply(deletes, 0).await;
    }

    pub(super) async fn inflict(mut self, n: usize, fault: Fault) {
        let who = format!("fault{n}");
        match fault {
            Fault::KillNode {
                node,
                when,
                down_ms,
            } => {
                let Some((id, down)) = self.take_down(node, when, down_ms).await else {
                    return;
                };
                self.trace
                    .log(&who, format_args!("kills drongo{} for {down} ms", node + 1));
                Handle::current().kill(id);
                madsim::time::sleep(Duration::from_millis(down)).await;
                self.bring_back(&who, node, id).await;
            }
            Fault::KillLeader {
                when,
                down_ms,
                second_after_ms,
            } => self.kill_leader(&who, when, down_ms, second_after_ms).await,
            Fault::RestartNode {
                node,
                when,
                down_ms,
            } => {
                let Some((id, down)) = self.take_down(node, when, down_ms).await else {
                    return;
                };
                let stop = {
                    let b = self.book.lock().unwrap_or_else(|p| p.into_inner());
                    b.shutdown.get(node).cloned()
                };
                self.trace
                    .log(&who, format_args!("stops drongo{} (drain)", node + 1));
                if let Some(stop) = stop {
                    stop.notify_one();
                }
                // The drain takes as long as its transactions (at most 32 s).
                for _ in 0..400 {
                    let done = {
                        let b = self.book.lock().unwrap_or_else(|p| p.into_inner());
                        b.drained.get(node).copied().unwrap_or(true)
                    };
                    if done {
                        break;
                    }
                    madsim::time::sleep(Duration::from_millis(100)).await;
                }
                Handle::current().kill(id);
                madsim::time::sleep(Duration::from_millis(down)).await;
                self.trace
                    .log(&who, format_args!("starts drongo{} again", node + 1));
                Handle::current().restart(id);
            }
            Fault::StoreUnavailable { when, for_ms } => {
                self.wait(when).await;
                let d = draw(&mut self.rng, for_ms);
                self.trace
                    .log(&who, format_args!("store unavailable for {d} ms"));
                self.server.set_faults(|f| f.unavailable = true);
                madsim::time::sleep(Duration::from_millis(d)).await;
                self.server.set_faults(|f| f.unavailable = false);
                self.trace.log(&who, "store available");
            }
            Fault::StoreAmbiguous { when, for_ms, rate } => {
                self.wait(when).await;
                let d = draw(&mut self.rng, for_ms);
                self.trace.log(
                    &who,
                    format_args!(
                        "store loses {:.0}% of write answers for {d} ms",
                        rate * 100.0
                    ),
                );
                self.server.set_faults(|f| f.ambiguous_rate = rate);
                madsim::time::sleep(Duration::from_millis(d)).await;
                self.server.set_faults(|f| f.ambiguous_rate = 0.0);
                self.trace.log(&who, "store answers every write");
            }
            Fault::PartitionNodeStore { node, when, for_ms } => {
                let store = vec![self.store];
                self.partition(&who, node, when, for_ms, &store, "the store")
                    .await;
            }
            Fault::CutRegions { when, for_ms } => self.cut_regions(&who, when, for_ms).await,
            Fault::WipeStore { when } => {
                self.wait(when).await;
                self.erase(&who, "").await;
            }
            Fault::IsolateNode { node, when, for_ms } => {
                let mut others = vec![self.store];
                others.extend(
                    self.nodes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != node)
                        .map(|(_, id)| *id),
                );
                // Silent from one lease after the cut (its last renewal came before) until
                // the heal (it then finds its lease gone and joins again).
                let ip = node_ip(node);
                let ttl = self.lease_ttl_ms;
                let ledger = self.ledger.clone();
                let cut = move || {
                    let start = sim_ms() + ttl;
                    ledger.lock().silent.push((ip, start, None));
                };
                let ledger = self.ledger.clone();
                let healed = move || {
                    let now = sim_ms();
                    for w in ledger.lock().silent.iter_mut().filter(|w| w.0 == ip) {
                        w.2.get_or_insert(now);
                    }
                };
                self.partition_with(
                    &who,
                    node,
                    when,
                    for_ms,
                    &others,
                    "the store and the other nodes",
                    cut,
                    healed,
                )
                .await;
            }
            Fault::PartitionNodeUas { node, when, for_ms } => {
                let uas = self.uas.clone();
                self.partition(&who, node, when, for_ms, &uas, "the user agents")
                    .await;
            }
            Fault::PartitionNodeLb { node, when, for_ms } => {
                let lbs = self.lbs.clone();
                let id = (node + 1) as u16;
                let ledger = self.ledger.clone();
                let cut = move || ledger.lock().lb_cuts.push((id, now_ms(), None));
                let ledger = self.ledger.clone();
                let healed = move || {
                    let now = now_ms();
                    for c in ledger.lock().lb_cuts.iter_mut().filter(|c| c.0 == id) {
                        c.2.get_or_insert(now);
                    }
                };
                self.partition_with(&who, node, when, for_ms, &lbs, "the balancers", cut, healed)
                    .await;
            }
        }
    }
}

/// The cluster node id of node `index` (its B-legs' Call-IDs start with it, in hex).
pub(crate) fn node_id(index: usize) -> u16 {
    (index + 1) as u16
}
