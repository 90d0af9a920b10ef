//! A whole simulated run: a store server, Drongo nodes running the production runtime,
//! user agents, a workload and a fault plan, then the invariants.

mod bindings;
mod faults;
mod invariants;
mod phones;
mod regions;
mod spec;

pub use faults::{Fault, Trigger};
pub use regions::REPLICATION_BOUND_MS;
pub use spec::WorldSpec;

use faults::FaultCtx;
use invariants::check;

use crate::ledger::{Counts, Ledger};
use crate::store::{History, SimStore, StoreServer, STORE_PORT};
use crate::trace::{sim_ms, Trace};
use crate::ua::{Command, Ua, UaConfig};
use drongo::runtime::{now_ms, run_with_regions, Clock, RunConfig};
use drongo::store::linearizability as lin;
use drongo::store::Store;
use drongo_core::config::Config;
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What a run produced.
pub struct Outcome {
    pub seed: u64,
    /// The trace's text (empty when run with `keep_trace` false).
    pub trace: String,
    pub hash: u64,
    /// Lines in the trace.
    pub lines: usize,
    pub violations: Vec<String>,
    /// What the run did (see `Counts`).
    pub counts: Counts,
    pub sim_ms: u64,
    pub wall_ms: u64,
}

/// How long a user agent in a cluster waits for any answer to a request in a dialog
/// before it sends it to the next node (a phone's server failover timer).
const FAILOVER_MS: u64 = 1_000;

fn store_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), STORE_PORT)
}

fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, (i + 1) as u8))
}

/// The SIP address of balancer `k` (when the world has one).
fn lb_addr(k: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 3, (k + 1) as u8)), 5060)
}

fn ua_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, (i + 1) as u8))
}

/// Shared between the supervisor and the nodes' init closures (which run again on
/// restart).
struct NodeBook {
    offsets: Vec<i64>,
    incarnations: Vec<u64>,
    /// Each node's shutdown signal (SIGTERM: drain, leave the cluster, stop), new for every
    /// start, and whether the current start has finished its drain.
    shutdown: Vec<Arc<tokio::sync::Notify>>,
    drained: Vec<bool>,
}

/// Runs `spec` with `seed` in a fresh madsim runtime, keeping the trace's text.
pub fn run(spec: &WorldSpec, seed: u64) -> Outcome {
    run_with(spec, seed, true)
}

/// Runs `spec` with `seed`; without `keep_trace` only the trace's hash is kept (a sweep
/// replays a failing seed to get its text).
pub fn run_with(spec: &WorldSpec, seed: u64, keep_trace: bool) -> Outcome {
    let wall = Instant::now();
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let two_balancers = spec.balancers > 1;
    let world_spec = spec.clone();
    let (trace, ledger, sim_ms) = rt.block_on(async move {
        let trace = if keep_trace {
            Trace::default()
        } else {
            Trace::quiet()
        };
        let ledger = Ledger::default();
        world(&world_spec, seed, trace.clone(), ledger.clone()).await;
        (trace, ledger, sim_ms())
    });
    let counts = counts(&ledger);
    let mut violations = trace.violations();
    violations.extend(vacuity(&counts));
    if spec.twins > 0 {
        violations.extend(registrar_vacuity(spec, &counts));
    }
    // (Lookups that had to find a binding gone are counted too; a run may have none, and
    // the heal's scenario test shows the check failing on a replicator that keeps copies.)
    if spec.regions && counts.remote_lookups == 0 {
        violations.push("vacuous: no lookup across regions had to list a binding".into());
    }
    if two_balancers && counts.calls_answered > 0 && counts.switches == 0 {
        violations.push("vacuous: no phone went through the other balancer mid-call".into());
    }
    Outcome {
        seed,
        hash: trace.hash(),
        lines: trace.len(),
        trace: trace.text(),
        violations,
        counts,
        sim_ms,
        wall_ms: wall.elapsed().as_millis() as u64,
    }
}

/// What the run did: the user agents' and faults' counts, and how each answered call ended.
fn counts(ledger: &Ledger) -> Counts {
    let l = ledger.lock();
    let mut c = l.counts.clone();
    c.registrations = l.regs.values().map(|r| r.refreshed).sum();
    c.answered_after_kill = l
        .ringing_at_kills
        .iter()
        .filter(|t| l.calls.get(*t).is_some_and(|c| c.caller.answered))
        .count() as u64;
    c.reinvites_ok_after_kill = l
        .reinviting_at_kills
        .iter()
        .filter(|(t, i)| {
            let answer = l.calls.get(*t).and_then(|c| c.reinvite_answers.get(**i));
            answer.is_some_and(|(code, _, _)| (200..300).contains(code))
        })
        .count() as u64;
    for call in l.calls.values().filter(|c| c.caller.answered) {
        c.calls_answered += 1;
        let legs = || std::iter::once(&call.caller).chain(&call.callees);
        let caller = call.caller.bye_sent_at;
        let callee = call.callees.iter().filter_map(|l| l.bye_sent_at).min();
        // Drongo's BYE came first only if it reached a party before either party's BYE.
        let drongo = legs()
            .filter_map(|l| l.got_bye_at)
            .min()
            .unwrap_or(u64::MAX);
        let (a, b) = (caller.unwrap_or(u64::MAX), callee.unwrap_or(u64::MAX));
        if a < b && a <= drongo {
            c.ended_by_caller += 1;
        } else if b <= a && b < u64::MAX && b <= drongo {
            c.ended_by_callee += 1;
        } else if drongo < u64::MAX {
            c.ended_by_drongo += 1;
        }
    }
    c
}

/// A run that did not do what it is for proves nothing: every fault must strike on its
/// trigger, and a run with many calls must answer some. (A short run may answer none by
/// chance; the runner also fails a sweep in which no call was answered at all.)
fn vacuity(c: &Counts) -> Vec<String> {
    let mut v = Vec::new();
    if c.calls_attempted >= 10 && c.calls_answered == 0 {
        v.push(format!(
            "vacuous: none of {} calls was answered",
            c.calls_attempted
        ));
    }
    if c.faults_struck < c.faults_planned {
        v.push(format!(
            "vacuous: {} of {} faults struck",
            c.faults_struck, c.faults_planned
        ));
    }
    if c.triggers_met < c.faults_struck {
        v.push(format!(
            "vacuous: {} of {} faults struck without their trigger",
            c.faults_struck - c.triggers_met,
            c.faults_struck
        ));
    }
    v
}

/// Shared addresses-of-record must have been put to the test: REGISTERs that raced,
/// listings checked against the other device, and (with lapsing devices) expired bindings
/// for the watchdog.
fn registrar_vacuity(spec: &WorldSpec, c: &Counts) -> Vec<String> {
    let mut v = Vec::new();
    if c.register_races == 0 {
        v.push("vacuous: no two REGISTERs of one address-of-record raced".into());
    }
    if c.listings_checked == 0 {
        v.push("vacuous: no listing was checked against another device".into());
    }
    if spec.lapse > 0.0 && c.watchdog_due == 0 {
        v.push("vacuous: no binding expired beside another for the watchdog".into());
    }
    v
}

fn draw(rng: &mut ChaCha8Rng, (lo, hi): (u64, u64)) -> u64 {
    lo + rng.next_u64() % (hi.saturating_sub(lo) + 1)
}

fn offset(rng: &mut ChaCha8Rng, bound: u64) -> i64 {
    if bound == 0 {
        0
    } else {
        (rng.next_u64() % (2 * bound + 1)) as i64 - bound as i64
    }
}

async fn world(spec: &WorldSpec, seed: u64, trace: Trace, ledger: Ledger) {
    let handle = Handle::current();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t1 = drongo_core::transaction::TimerConfig::default().t1;

    // The store.
    let server = StoreServer::new(seed, trace.clone());
    server.set_faults(|f| f.latency_ms = spec.store_latency_ms);
    let store_node = {
        let server = server.clone();
        handle
            .create_node()
            .name("store")
            .ip(store_addr().ip())
            .init(move || server.clone().serve(store_addr()))
            .build()
    };

    // With two regions, region b's store.
    let second = spec
        .regions
        .then(|| regions::second_store(&handle, spec, seed, &trace));

    // Drongo nodes, whose store clients record what they did to call records.
    let history = History::default();
    let book = Arc::new(Mutex::new(NodeBook {
        offsets: (0..spec.nodes)
            .map(|_| offset(&mut rng, spec.skew_bound_ms))
            .collect(),
        incarnations: vec![0; spec.nodes],
        shutdown: (0..spec.nodes).map(|_| Default::default()).collect(),
        drained: vec![false; spec.nodes],
    }));
    let mut core = Config {
        session_expires_secs: spec.session_expires_secs,
        ..Config::default()
    };
    core.registrar.min_expires = 30;
    // The B2BUA's no-answer limit (a policy: §16.6's 3 minutes bind proxies) within the
    // run's settling time, so that a call ringing at the end has ended by the checks
    // (lb-partition-node seed 195: a call whose caller had given up rang on, stored).
    core.timers.timer_c = 60_000;
    core.cluster.lease_ttl_ms = spec.lease_ttl_ms;
    core.cluster.strategy = spec.strategy;
    core.cluster.transactions = if spec.mutant_local_transactions {
        drongo_core::config::Transactions::Local
    } else {
        spec.transactions
    };
    // Behind balancers, a member's INVITEs to callees go through the first (its answers
    // then reach whoever runs the call).
    core.cluster.outbound = (spec.balancers > 0 && !spec.mutant_no_outbound).then(|| lb_addr(0));
    core.auth_required = spec.mutant_refuse_all;
    if spec.mutant_slow_retransmissions {
        core.timers.t1 *= 2;
    }
    let mut nodes: Vec<NodeId> = Vec::new();
    for i in 0..spec.nodes {
        let (book, trace, mut core) = (book.clone(), trace.clone(), core.clone());
        let region = regions::region_of(spec, i);
        if spec.regions {
            core.cluster.region = Some(regions::NAMES[region].to_string());
        }
        let node_spec = spec.clone();
        let history = history.clone();
        let (cluster, unfenced) = (spec.cluster, spec.mutant_unfenced);
        let advertise = if spec.balancers > 0 {
            lb_addr(0)
        } else {
            SocketAddr::new(node_ip(i), 5060)
        };
        let private = spec
            .mutant_private_bindings
            .then(|| format!("reg{}/", i + 1));
        let reg_mutants = crate::mutants::RegMutants {
            blind: spec.mutant_blind_bindings,
            idle_watchdog: spec.mutant_idle_watchdog,
            kept_copies: false,
        };
        let name = format!("drongo{}", i + 1);
        let who = name.clone();
        let node = handle
            .create_node()
            .name(name)
            .ip(node_ip(i))
            .init(move || {
                let (offset, incarnation, stop) = {
                    let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
                    b.incarnations[i] += 1;
                    let stop = Arc::new(tokio::sync::Notify::new());
                    b.shutdown[i] = stop.clone();
                    b.drained[i] = false;
                    (b.offsets[i], b.incarnations[i], stop)
                };
                let rc = RunConfig {
                    sip: SocketAddr::new(node_ip(i), 5060),
                    advertise,
                    admin: SocketAddr::new(node_ip(i), 8080),
                    core: core.clone(),
                    node_id: (i + 1) as u16,
                    seed: seed ^ ((i as u64 + 1) << 48) ^ (incarnation << 32),
                    clock: Clock { offset_ms: offset },
                    queue: RunConfig::QUEUE,
                    cluster,
                    unfenced,
                };
                let (trace, who, history) = (trace.clone(), who.clone(), history.clone());
                let (book, private) = (book.clone(), private.clone());
                let spec = node_spec.clone();
                async move {
                    trace.log(
                        &who,
                        format_args!("starts (incarnation {incarnation}, clock {offset:+} ms)"),
                    );
                    let home = regions::store_addr_of(region);
                    let store = match SimStore::connect(home, history).await {
                        Ok(s) => s
                            .with_private_bindings(private)
                            .with_reg_mutants(reg_mutants),
                        Err(e) => return trace.violation(&who, format_args!("no store: {e}")),
                    };
                    let peers = regions::peers(&spec, region).await;
                    let stop = async move { stop.notified().await };
                    match run_with_regions(rc, store, peers, stop).await {
                        Ok(()) => {
                            trace.log(&who, "drained and stopped");
                            let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
                            b.drained[i] = true;
                        }
                        Err(e) => trace.violation(&who, format_args!("node stopped: {e}")),
                    }
                }
            })
            .build();
        nodes.push(node.id());
    }

    // The balancers: `drongo lb` itself, its members read from the store.
    let mut lbs: Vec<NodeId> = Vec::new();
    let mut lb_cfg = drongo::lb::LbConfig::default();
    if spec.mutant_lb_never_falls {
        lb_cfg.health.fall = u32::MAX;
    }
    if let Some(ms) = spec.slow_start_ms {
        lb_cfg.health.slow_start_ms = ms;
    }
    if spec.mutant_no_slow_start {
        lb_cfg.health.slow_start_ms = 0;
    }
    if spec.mutant_endless_slow_start {
        lb_cfg.health.slow_start_ms *= 100;
    }
    for k in 0..spec.balancers {
        let (trace, history) = (trace.clone(), history.clone());
        let me = lb_addr(k);
        let lb_cfg = lb_cfg.clone();
        let who = if k == 0 {
            "lb".to_string()
        } else {
            format!("lb{}", k + 1)
        };
        let lb = handle
            .create_node()
            .name(who.clone())
            .ip(me.ip())
            .init(move || {
                let (trace, history, who) = (trace.clone(), history.clone(), who.clone());
                let cfg = lb_cfg.clone();
                async move {
                    let store = match SimStore::connect(store_addr(), history).await {
                        Ok(s) => s,
                        Err(e) => return trace.violation(&who, format_args!("no store: {e}")),
                    };
                    let admin = SocketAddr::new(me.ip(), 8080);
                    let members = drongo::lb::Members::Store(store);
                    if let Err(e) =
                        drongo::lb::run_lb(me, admin, members, cfg, std::future::pending()).await
                    {
                        trace.violation(&who, format_args!("balancer stopped: {e}"));
                    }
                }
            })
            .build();
        lbs.push(lb.id());
    }

    // User agents.
    let mut uas = Vec::new();
    let mut homes = Vec::new();
    for (i, (cfg, home)) in phones::configs(spec, &mut rng).into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        let node = handle
            .create_node()
            .name(cfg.name.clone())
            .ip(ua_ip(i))
            .build();
        ledger.lock().homes.insert(cfg.name.clone(), home);
        node.spawn(Ua::run(cfg, trace.clone(), ledger.clone(), rx));
        uas.push((node.id(), tx));
        homes.push(home);
    }

    // Faults.
    ledger.lock().counts.faults_planned = spec.faults.len() as u64;
    let mut fault_tasks = Vec::new();
    for (n, fault) in spec.faults.iter().enumerate() {
        let fault_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
        let ctx = FaultCtx {
            trace: trace.clone(),
            ledger: ledger.clone(),
            server: server.clone(),
            nodes: nodes.clone(),
            uas: uas.iter().map(|u| u.0).collect(),
            lbs: lbs.clone(),
            store: store_node.id(),
            region_stores: second
                .as_ref()
                .map(|(_, b)| vec![store_node.id(), *b])
                .unwrap_or_default(),
            book: book.clone(),
            skew: spec.skew_bound_ms,
            rng: fault_rng,
            forget_calls: spec.mutant_forget_calls,
            reuse_term: spec.mutant_reused_term,
            lease_ttl_ms: spec.lease_ttl_ms,
        };
        let fault = fault.clone();
        fault_tasks.push(tokio::task::spawn(async move {
            ctx.inflict(n, fault).await;
        }));
    }

    // Shared addresses-of-record: the watchdog must keep the store free of expired bindings.
    if spec.twins > 0 {
        let allowance = 2 * spec.lease_ttl_ms + 1_500 + 2 * spec.skew_bound_ms;
        tokio::task::spawn(bindings::watch(
            server.clone(),
            trace.clone(),
            ledger.clone(),
            allowance,
        ));
    }

    // The workload.
    madsim::time::sleep(Duration::from_millis(2_000)).await;
    let gap = spec.workload_ms / spec.calls.max(1) as u64;
    for k in 0..spec.calls {
        madsim::time::sleep(Duration::from_millis(draw(
            &mut rng,
            (gap / 2, gap * 3 / 2),
        )))
        .await;
        let caller = (rng.next_u64() % spec.uas as u64) as usize;
        let peers: Vec<usize> = (0..spec.uas)
            // In a cluster any user: every member finds every registration.
            // (With regions, one in the caller's region: phones talk to their region.)
            .filter(|j| *j != caller && (spec.cluster || homes[*j] == homes[caller]))
            .filter(|j| {
                regions::region_of(spec, homes[*j]) == regions::region_of(spec, homes[caller])
            })
            .collect();
        if peers.is_empty() {
            continue;
        }
        let callee = peers[(rng.next_u64() % peers.len() as u64) as usize];
        let cmd = Command::Call {
            callee: format!("u{}", callee + 1),
            token: format!("call{k}"),
        };
        let _ = uas[caller].1.send(cmd);
    }
    for t in fault_tasks {
        let _ = t.await;
    }
    // Settle: every call must be over by the session timer, retransmissions done.
    let settle = spec
        .settle_ms
        .unwrap_or(spec.session_expires_secs * 1000 + 64 * t1 + 20_000);
    trace.log("world", "workload done; settling");
    madsim::time::sleep(Duration::from_millis(settle)).await;
    // Kills, isolations and stops end transactions without a final response (they are
    // node-local; a drain gives up on those still open after 32 s).
    let kills = spec.faults.iter().any(|f| {
        matches!(
            f,
            Fault::KillNode { .. }
                | Fault::KillLeader { .. }
                | Fault::IsolateNode { .. }
                | Fault::RestartNode { .. }
        )
    });
    let ops = history.ops();
    // Call records a write was acknowledged to have created.
    let stored = ops
        .iter()
        .filter(|o| {
            matches!(
                o.kind,
                lin::Kind::Write {
                    expect: None,
                    outcome: lin::Outcome::Ok,
                    ..
                }
            )
        })
        .map(|o| o.key.clone())
        .collect();
    let answered = spec.balancers > 0 && spec.link.is_clean();
    let distributed =
        spec.balancers > 0 && spec.transactions == drongo_core::config::Transactions::Distributed;
    let checks = invariants::Checks {
        finals: !kills,
        stored: &stored,
        t: 64 * t1,
        answered,
        distributed,
        slow_start_ms: spec.slow_start_ms,
    };
    check(&trace, &ledger, &server, checks).await;
    invariants::one_leader_per_term(&trace, &server.leaders.log());
    if let Some((b, _)) = &second {
        invariants::no_dialog_state_left(&trace, b).await;
        invariants::one_leader_per_term(&trace, &b.leaders.log());
    }
    // The clients' history of call records must be linearizable, unless the world wrote
    // to the store behind their backs.
    let tampered = spec.mutant_forget_calls
        || spec
            .faults
            .iter()
            .any(|f| matches!(f, Fault::WipeStore { .. }));
    if !tampered {
        match drongo::store::linearizability::check(&ops, |_| None) {
            Ok(()) => trace.log(
                "check",
                format_args!("{} store operations linearizable", ops.len()),
            ),
            Err(e) => trace.violation("check", format_args!("store history: {e}")),
        }
    }
    // Kill every node and let the executor drop their tasks: madsim does not cancel a
    // runtime's tasks when it is dropped, and tasks that hold each other's wakers would
    // otherwise outlive the run (a sweep grew by megabytes a seed).
    let every = nodes.iter().chain(&lbs).chain(uas.iter().map(|u| &u.0));
    let stores = std::iter::once(store_node.id()).chain(second.as_ref().map(|(_, b)| *b));
    for id in every.copied().chain(stores) {
        handle.kill(id);
    }
    madsim::time::sleep(Duration::from_millis(1)).await;
}
