//! The node runtime: one task owns the sans-IO [`Node`] and feeds it packets, store results
//! and time; the committer (see [`committer`]) commits the store writes of the batches the
//! node makes and only then sends their transmits.
//!
//! Neither waits on the other: the node hands a batch over only when the committer's queue
//! has room (otherwise the batch stays with the node, which refuses new work while too much
//! is uncommitted), and the committer reports back on a channel it never blocks on.

mod clock;
mod committer;
#[cfg(all(test, not(madsim)))]
mod committer_tests;
pub mod election;
pub mod membership;
pub mod replicate;
mod transport;

use crate::admin;
use crate::store::{Store, StoreError};
pub use clock::{now_ms, Clock};
use drongo_core::config::Config;
use drongo_core::node::{Batch, Input, Node};
use drongo_core::transaction::{Peer, Transport};
use drongo_core::UnixMillis;
use membership::Lease;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use transport::{spawn_connection, Sender};
pub(crate) use transport::{udp_send, udp_socket};

/// How long a drain (SIGTERM) may wait for transactions to finish (a second signal ends it
/// at once; see `main.rs`).
const DRAIN_LIMIT: u64 = 32_000;
/// How often the call records are swept for ones no call holds (`Node::handle_sweep`).
const SWEEP_MS: u64 = 30_000;

/// Everything `drongo run` was told.
pub struct RunConfig {
    /// Where the SIP sockets (UDP and TCP) bind.
    pub sip: SocketAddr,
    /// What the node puts on the wire as its address (Via, Contact): `sip` unless a load
    /// balancer or NAT stands in front.
    pub advertise: SocketAddr,
    pub admin: SocketAddr,
    pub core: Config,
    pub node_id: u16,
    /// Seeds the node's tags, branches and Call-IDs (the simulation fixes it; `drongo run`
    /// takes it from the clock and the process id).
    pub seed: u64,
    pub clock: Clock,
    /// Capacity of the packet queue and of the committer's queue.
    pub queue: usize,
    /// Join a cluster (a shared store): keep `node/{id}` under a lease and stay silent
    /// whenever the lease may have run out. Off for the single-node stores.
    pub cluster: bool,
    /// A mutant for the simulation's test that the silence check can fail: the lease does
    /// not stop SIP from leaving (writes stay fenced). Always false in `drongo run`.
    pub unfenced: bool,
}

impl RunConfig {
    /// The default capacity of the runtime's queues.
    pub const QUEUE: usize = 65_536;
}

/// Runs a node until `shutdown` completes, then drains: no new calls, transactions finish,
/// every batch is committed and sent.
pub async fn run<S: Store + Clone>(
    rc: RunConfig,
    store: S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_regions(rc, store, Vec::<(String, S)>::new(), shutdown).await
}

/// [`run`], with the stores of the other regions (`[cluster] regions`), whom this region's
/// leader copies its registrations to (`replicate`).
pub async fn run_with_regions<S: Store + Clone, P: Store + Clone>(
    rc: RunConfig,
    store: S,
    regions: Vec<(String, P)>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // A cluster member joins before it binds anything: a second process with a live
    // member's id refuses to start.
    let lease = if rc.cluster {
        let me = membership::Identity {
            id: rc.node_id,
            sip: rc.advertise.to_string(),
            direct: if rc.sip == rc.advertise || rc.sip.ip().is_unspecified() {
                String::new()
            } else {
                rc.sip.to_string()
            },
            admin: rc.admin.to_string(),
        };
        let ttl = rc.core.cluster.lease_ttl_ms;
        let lease = membership::start(store.clone(), me, rc.clock, ttl)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Some(lease)
    } else {
        None
    };
    let udp = Arc::new(udp_socket(rc.sip).await?);
    let tcp = TcpListener::bind(rc.sip).await?;
    let admin_listener = TcpListener::bind(rc.admin).await?;
    info!(sip = %rc.sip, advertise = %rc.advertise, admin = %rc.admin, "drongo listening (UDP and TCP)");

    // Datagrams (and frames cut from streams) come on one channel, the committer's answers
    // on another: both are the core's `Input`.
    let (packet_tx, mut packet_rx) = mpsc::channel::<Input>(rc.queue);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(rc.queue);
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<Input>();
    let loaded_tx = results_tx.clone();
    let (metrics_tx, mut metrics_rx) = mpsc::channel::<oneshot::Sender<String>>(16);
    let sender = Sender {
        udp: udp.clone(),
        tcp: Arc::new(Mutex::new(HashMap::new())),
        input: packet_tx.clone(),
        max_message: rc.core.limits.max_message_size,
        fence: lease.clone().filter(|_| !rc.unfenced),
    };
    let committer = tokio::task::spawn(committer::run(
        store.clone(),
        batch_rx,
        sender.clone(),
        results_tx.clone(),
        rc.clock,
        lease.clone(),
    ));
    // Hot standby: every change to a call record, for the node to keep those it stands by
    // for. A broken watch is opened again (changes meanwhile are missed: the copy is only
    // a head start, and a takeover without one reads the store).
    if lease.is_some() && rc.core.cluster.strategy == drongo_core::config::Strategy::HotStandby {
        let prefix = drongo_core::store::CALL_PREFIX;
        tokio::task::spawn(follow(store.clone(), prefix, results_tx.clone()));
    }
    // In a cluster, every change to the bindings, for every member to find every
    // registration (`node::bindings`; a lookup that misses reads the store, so a change
    // missed while the watch is opened again costs no call).
    if lease.is_some() {
        let prefix = drongo_core::store::REG_PREFIX;
        tokio::task::spawn(follow(store.clone(), prefix, results_tx.clone()));
    }
    // Regions: the other regions' copies of their registrations, for every member to find
    // them; and, on the leader, the copies of ours in their stores.
    let replication = match (&lease, &rc.core.cluster.region) {
        (Some(lease), Some(region)) => {
            let prefix = drongo_core::store::COPY_PREFIX;
            tokio::task::spawn(follow(store.clone(), prefix, results_tx.clone()));
            let (store, region) = (store.clone(), region.clone());
            Some(replicate::start(
                store,
                region,
                regions,
                lease.clone(),
                rc.clock,
            ))
        }
        _ => None,
    };
    // The sweep: every call record, now and then, for the node to delete what no call of
    // its holds (`Node::handle_sweep`). A failed scan waits for the next round.
    {
        let (store, results, clock) = (store.clone(), results_tx, rc.clock);
        tokio::task::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(SWEEP_MS)).await;
                let prefix = drongo_core::store::CALL_PREFIX;
                if let Ok(records) = store.scan(prefix, usize::MAX, clock.now()).await {
                    if results.send(Input::Sweep(records)).is_err() {
                        break;
                    }
                }
            }
        });
    }

    // UDP receiver.
    {
        let (udp, input) = (udp.clone(), packet_tx.clone());
        tokio::task::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                match udp.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let from = Peer {
                            transport: Transport::Udp,
                            addr: from,
                        };
                        let bytes = buf[..n].to_vec();
                        if input.send(Input::Datagram { from, bytes }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => debug!(error = %e, "udp recv error"),
                }
            }
        });
    }
    // TCP acceptor.
    {
        let sender = sender.clone();
        tokio::task::spawn(async move {
            while let Ok((stream, addr)) = tcp.accept().await {
                let _ = stream.set_nodelay(true);
                spawn_connection(stream, addr, sender.clone());
            }
        });
    }
    let draining = Arc::new(AtomicBool::new(false));
    tokio::task::spawn(admin::serve(
        admin_listener,
        metrics_tx,
        draining.clone(),
        lease.clone().map(|l| (rc.node_id, l)),
    ));

    let clock = rc.clock;
    let rc_node_id = rc.node_id;
    let now_ms = || clock.now();
    let mut node = Node::new(rc.core, rc.advertise, rc.node_id, rc.seed);
    // Load every record; a store that is briefly unavailable is waited for, a fatal error
    // (or one that lasts) stops the node rather than run it without its state.
    let mut delay = 100;
    let records = loop {
        match store.scan("", usize::MAX, now_ms()).await {
            Ok(records) => break records,
            Err(e @ (StoreError::Fatal(_) | StoreError::Conflict)) => {
                return Err(std::io::Error::other(format!("cannot load state: {e}")));
            }
            Err(e) if delay > 20_000 => {
                return Err(std::io::Error::other(format!("cannot load state: {e}")));
            }
            Err(e) => {
                warn!(error = %e, "store not ready; loading state again");
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay *= 2;
            }
        }
    };
    let now = now_ms();
    info!(records = records.len(), "state loaded from the store");
    // A member restores its calls as a member: it claims them for this incarnation.
    let mut seen = ClusterSeen::default();
    if let Some(lease) = &lease {
        seen.sync(&mut node, lease, now);
    }
    node.restore(&records, now);

    tokio::pin!(shutdown);
    let mut draining_since: Option<UnixMillis> = None;
    let mut next_drain_report = 5_000;
    loop {
        // The cluster's members, when they changed (the core serves and takes over calls
        // by them); the reads the node asks for (calls it does not hold).
        if let Some(lease) = &lease {
            seen.sync(&mut node, lease, now_ms());
        }
        while let Some(key) = node.poll_load() {
            tokio::task::spawn(load(store.clone(), key, loaded_tx.clone(), clock));
        }
        while let Some(prefix) = node.poll_scan() {
            tokio::task::spawn(scan(store.clone(), prefix, loaded_tx.clone(), clock));
        }
        while let Some(line) = node.poll_diagnostic() {
            warn!("{line}");
        }
        // Hand batches over while the committer's queue has room; never wait for it here.
        while node.has_batch() {
            let Ok(permit) = batch_tx.try_reserve() else {
                break;
            };
            if let Some(b) = node.poll_batch() {
                permit.send(b);
            }
        }
        let now = now_ms();
        if let Some(since) = draining_since {
            if (node.is_idle() && !node.has_batch()) || now.saturating_sub(since) > DRAIN_LIMIT {
                break;
            }
            // Every 5 s of a drain, what it waits for.
            if now.saturating_sub(since) >= next_drain_report {
                next_drain_report += 5_000;
                let holds = node.drain_holds();
                warn!(
                    batches = node.has_batch(),
                    "still draining: {}",
                    holds.join("; ")
                );
            }
        }
        let wait = node
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| {
                Duration::from_millis(t.saturating_sub(now))
            })
            .min(Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = &mut shutdown, if draining_since.is_none() => {
                info!("draining: no new calls; waiting for transactions");
                node.drain();
                draining.store(true, Ordering::Relaxed);
                if let Some(lease) = &lease {
                    lease.drain();
                }
                draining_since = Some(now_ms());
            }
            Some(result) = results_rx.recv() => {
                node.handle_input(now_ms(), result);
                while let Ok(r) = results_rx.try_recv() {
                    node.handle_input(now_ms(), r);
                }
            }
            permit = batch_tx.reserve(), if node.has_batch() => {
                let Ok(permit) = permit else { break };
                if let Some(b) = node.poll_batch() {
                    permit.send(b);
                }
            }
            Some(reply) = metrics_rx.recv() => {
                let mut text = admin::render_metrics(&node);
                if let Some(r) = &replication {
                    text.push_str(&admin::render_replication(r));
                }
                let _ = reply.send(text);
            }
            _ = lease_changed(&lease) => {}
            packet = packet_rx.recv() => {
                let Some(p) = packet else { break };
                // A request is judged by the members as they are now, not as they were
                // when this turn of the loop began (a member that died meanwhile).
                if let Some(lease) = lease.as_ref().filter(|l| seen.moved(l)) {
                    seen.sync(&mut node, lease, now_ms());
                }
                node.handle_input(now_ms(), p);
                // Take whatever else is ready, up to a bound, before looking at timers.
                for _ in 0..256 {
                    match packet_rx.try_recv() {
                        Ok(p) => node.handle_input(now_ms(), p),
                        Err(_) => break,
                    }
                }
                let now = now_ms();
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
            _ = tokio::time::sleep(wait) => node.handle_timeout(now_ms()),
        }
    }
    // Whatever the node still holds goes to the committer (which never waits for us now).
    while let Some(b) = node.poll_batch() {
        if batch_tx.send(b).await.is_err() {
            break;
        }
    }
    drop(batch_tx);
    let _ = committer.await;
    if let Some(lease) = &lease {
        membership::leave(&store, rc_node_id, lease, clock).await;
    }
    info!("drained; state flushed");
    Ok(())
}

/// What the node loop last told the core of the cluster.
struct ClusterSeen {
    generation: Option<u64>,
    lease_held: bool,
    leading: Option<u64>,
}

impl Default for ClusterSeen {
    fn default() -> Self {
        Self {
            generation: None,
            lease_held: true,
            leading: None,
        }
    }
}

impl ClusterSeen {
    /// Whether the members changed since the last sync (one atomic load: asked before
    /// every batch of packets).
    fn moved(&self, lease: &Lease) -> bool {
        self.generation != Some(lease.generation())
    }

    /// Tells the node what changed: the members (or the lease holding again after a lapse
    /// it survived: the node then loads the calls it let go of while fenced), and whether
    /// it leads (it then runs the chores).
    fn sync(&mut self, node: &mut Node, lease: &Lease, now: UnixMillis) {
        let g = lease.generation();
        lease.set_calls(node.active_calls() as u64, node.standby_calls() as u64);
        let holds = lease.holds();
        let regained = holds && !self.lease_held;
        self.lease_held = holds;
        if self.generation != Some(g) || regained {
            self.generation = Some(g);
            node.handle_input(now, lease.view());
        }
        let term = lease.office().term(lease, now);
        if term != self.leading {
            self.leading = term;
            node.handle_input(now, Input::Leader { term });
        }
    }
}

/// Completes when the members or the incarnation changed (never on a single node).
async fn lease_changed(lease: &Option<Arc<Lease>>) {
    match lease {
        Some(l) => l.changed().await,
        None => std::future::pending().await,
    }
}

/// Follows every record under `prefix` for the node (`Input::Watched`), for as long as it
/// runs.
async fn follow<S: Store>(store: S, prefix: &'static str, results: mpsc::UnboundedSender<Input>) {
    loop {
        match store.watch(prefix).await {
            Ok(mut changes) => {
                while let Some(c) = changes.recv().await {
                    let input = Input::Watched {
                        key: c.key,
                        record: c.record,
                    };
                    if results.send(input).is_err() {
                        return;
                    }
                }
                warn!(prefix, "watch ended; watching again");
            }
            Err(e) => warn!(prefix, error = %e, "cannot watch; trying again"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads `key` for the node (a call it does not hold): a few tries over about a second,
/// then "no answer" (the waiting requests get 503).
async fn load<S: Store>(
    store: S,
    key: String,
    results: mpsc::UnboundedSender<Input>,
    clock: Clock,
) {
    let mut record = None;
    for delay in [0, 100, 300, 600] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match store.get(&key, clock.now()).await {
            Ok(r) => {
                record = Some(r);
                break;
            }
            Err(StoreError::Fatal(_) | StoreError::Conflict) => break,
            Err(_) => {}
        }
    }
    let _ = results.send(Input::Loaded { key, record });
}

/// Scans `prefix` for the node (a member that left: its owner index); "no answer" after a
/// failure, which the node asks again for after a pause.
async fn scan<S: Store>(
    store: S,
    prefix: String,
    results: mpsc::UnboundedSender<Input>,
    clock: Clock,
) {
    let records = store.scan(&prefix, usize::MAX, clock.now()).await.ok();
    if records.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = results.send(Input::Scanned { prefix, records });
}
