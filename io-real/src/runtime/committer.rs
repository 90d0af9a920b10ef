//! The committer: takes the node's batches, commits their writes (one group commit for
//! many batches), and only then sends their transmits (durable before visible).
//!
//! Only what must be ordered is: batches that share an order key (a store key or a
//! Call-ID, [`Batch::order_keys`]) keep their order; others do not wait for each other. A
//! batch without writes whose keys are free leaves at once. Batches with writes go in one
//! group commit at a time, so that a busy node commits many with one fsync; but when that
//! commit stalls (the store is retrying), the batches that do not depend on it get a group
//! of their own, so a stuck call cannot delay another's answers or retransmissions.
//! A batch is looked at when it arrives (sent at once if it may be) and again only when a
//! commit ends or stalls, so the work per batch stays constant under load.
//!
//! It never blocks on the node: what it reports (the core's [`Input`]: `Committed`,
//! `CommitFailed` with each failed write's kind, `Record`) goes back on an unbounded
//! channel, whose size is bounded by the batches in flight (the node refuses new work
//! beyond `limits.max_uncommitted_batches`). So the node loop and the committer cannot wait
//! on each other. It neither parses nor hashes what it sends: the node drops
//! retransmissions whose first copy still waits for the store.

use super::membership::Lease;
use super::transport::Sender;
use super::Clock;
use crate::store::{apply_resolved, Store, StoreError};
use drongo_core::node::{Batch, BatchId, Input, WriteError};
use drongo_core::store::{Key, StoreWrite};
use drongo_core::transaction::Transmit;
use drongo_core::UnixMillis;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// How long a commit keeps retrying a store that is unavailable before it gives up.
const STORE_PATIENCE: u64 = 5_000;
/// Batches in one group commit, at most.
const GROUP_MAX: usize = 1024;
/// A group commit running this long has stalled (the store is retrying): independent
/// batches get a group of their own instead of waiting for it. Well above a loaded fsync, so
/// that a busy node keeps committing many batches with one.
const STALL_MS: u64 = 200;
/// Group commits in flight at once, at most.
const GROUPS_MAX: usize = 16;

/// A group commit that finished.
struct Done {
    id: u64,
    batches: Vec<Batch>,
    results: Vec<Result<(), StoreError>>,
    /// Nothing was written: the lease did not hold.
    fenced: bool,
}

struct Committer<S> {
    store: S,
    sender: Sender,
    results: mpsc::UnboundedSender<Input>,
    clock: Clock,
    /// Batches not yet committed or sent, in the node's order, with their order keys.
    pending: VecDeque<(Batch, Vec<String>)>,
    /// How many pending batches hold each key.
    pending_keys: HashMap<String, usize>,
    /// Order keys held by the group commits in flight.
    busy: HashSet<String>,
    /// Group commits in flight: id → (start time, its keys).
    running: BTreeMap<u64, (UnixMillis, Vec<String>)>,
    next_id: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    /// The cluster lease: batches of an older incarnation are dropped whole.
    lease: Option<Arc<Lease>>,
    /// Versions that failed puts would have made, by key, with the number of the failure
    /// report that told the node: a batch the node made before it heard that report
    /// ([`Batch::heard`]) whose write expects such a version is failed unwritten. Applied,
    /// it could succeed on a record that another writer brought to the same version number
    /// (a member that adopted the call meanwhile), and overwrite it. A batch made after is
    /// made on what the node read back (the failed write may have landed after all), and
    /// is written as usual.
    unborn: HashMap<String, (u64, u64)>,
    /// Failure reports (`CommitFailed`) sent to the node so far.
    reported: u64,
}

/// Runs the committer until the node closes `rx` and everything taken is committed and sent.
pub async fn run<S: Store + Clone>(
    store: S,
    mut rx: mpsc::Receiver<Batch>,
    sender: Sender,
    results: mpsc::UnboundedSender<Input>,
    clock: Clock,
    lease: Option<Arc<Lease>>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut c = Committer {
        store,
        sender,
        results,
        clock,
        pending: VecDeque::new(),
        pending_keys: HashMap::new(),
        busy: HashSet::new(),
        running: BTreeMap::new(),
        next_id: 0,
        done_tx,
        lease,
        unborn: HashMap::new(),
        reported: 0,
    };
    let mut open = true;
    loop {
        if !c.pending.is_empty() && c.may_start_group() {
            c.dispatch().await;
        }
        if !open && c.pending.is_empty() && c.running.is_empty() {
            break;
        }
        // When batches wait only because a young commit runs, look again once it stalls
        // (once: after that, arrivals and finished commits are what can change anything).
        let now = c.clock.now();
        let stall_in = c
            .youngest_start()
            .filter(|_| !c.pending.is_empty())
            .map(|at| at + STALL_MS)
            .filter(|due| *due > now)
            .map(|due| due - now);
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => c.finish(done).await,
            b = rx.recv(), if open => match b {
                Some(b) => {
                    c.accept(b).await;
                    for _ in 0..GROUP_MAX {
                        let Ok(b) = rx.try_recv() else { break };
                        c.accept(b).await;
                    }
                }
                None => open = false,
            },
            _ = tokio::time::sleep(Duration::from_millis(stall_in.unwrap_or(1_000))), if stall_in.is_some() => {}
        }
    }
}

impl<S: Store + Clone> Committer<S> {
    fn youngest_start(&self) -> Option<UnixMillis> {
        self.running.values().map(|(at, _)| *at).max()
    }

    /// A new group commit may start when none runs, or every running one has stalled.
    fn may_start_group(&self) -> bool {
        let now = self.clock.now();
        self.running.len() < GROUPS_MAX
            && self
                .youngest_start()
                .is_none_or(|at| now.saturating_sub(at) >= STALL_MS)
    }

    /// Tells the node that writes of batch `id` failed (and counts the report).
    fn report_failed(&mut self, id: BatchId, errors: Vec<(usize, WriteError)>) {
        self.reported += 1;
        let _ = self.results.send(Input::CommitFailed { id, errors });
    }

    fn report_committed(&self, ids: Vec<BatchId>) {
        if !ids.is_empty() {
            let _ = self.results.send(Input::Committed(ids));
        }
    }

    /// Whether `b` was made in an incarnation before the lease's current one.
    fn stale(&self, b: &Batch) -> bool {
        b.incarnation != 0
            && self
                .lease
                .as_ref()
                .is_some_and(|l| l.incarnation() != b.incarnation)
    }

    /// Drops a stale batch: nothing written, nothing sent; the node hears that its writes
    /// did not happen (it forgot those calls when it joined again).
    fn drop_stale(&mut self, b: Batch) {
        if let Some(l) = &self.lease {
            l.dropped();
        }
        if !b.writes.is_empty() {
            let errors = (0..b.writes.len())
                .map(|i| (i, WriteError::Fenced))
                .collect();
            self.report_failed(b.id, errors);
        } else if b.report {
            self.report_committed(vec![b.id]);
        }
    }

    /// A batch from the node: sent at once when it has no writes and no key it shares with
    /// a batch before it; otherwise it waits.
    async fn accept(&mut self, b: Batch) {
        if self.stale(&b) {
            return self.drop_stale(b);
        }
        let free = b.writes.is_empty()
            && b.order_keys()
                .all(|k| !self.busy.contains(k) && !self.pending_keys.contains_key(k));
        if free {
            let report = b.report.then_some(b.id);
            self.send_all(b.transmits).await;
            return self.report_committed(report.into_iter().collect());
        }
        let keys: Vec<String> = b.order_keys().map(str::to_string).collect();
        for k in &keys {
            *self.pending_keys.entry(k.clone()).or_default() += 1;
        }
        self.pending.push_back((b, keys));
    }

    /// Starts what may start, in order: write-less batches whose keys are free are sent;
    /// batches with writes (and those ordered behind them) form one group commit.
    async fn dispatch(&mut self) {
        let now = self.clock.now();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut group: Vec<Batch> = Vec::new();
        let mut group_keys: HashSet<String> = HashSet::new();
        let mut rest = VecDeque::with_capacity(self.pending.len());
        let mut sent = Vec::new();
        self.pending_keys.clear();
        while let Some((b, keys)) = self.pending.pop_front() {
            if self.stale(&b) {
                self.drop_stale(b);
                continue;
            }
            let waits = keys
                .iter()
                .any(|k| self.busy.contains(k) || blocked.contains(k));
            if !waits && self.built_on_unborn(&b) {
                self.fail_unwritten(b).await;
                continue;
            }
            let behind_group = keys.iter().any(|k| group_keys.contains(k));
            if !waits && (behind_group || !b.writes.is_empty()) && group.len() < GROUP_MAX {
                group_keys.extend(keys);
                group.push(b);
            } else if !waits && !behind_group && b.writes.is_empty() {
                if b.report {
                    sent.push(b.id);
                }
                self.send_all(b.transmits).await;
            } else {
                for k in &keys {
                    *self.pending_keys.entry(k.clone()).or_default() += 1;
                }
                blocked.extend(keys.iter().cloned());
                rest.push_back((b, keys));
            }
        }
        self.pending = rest;
        self.report_committed(sent);
        if group.is_empty() {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let keys: Vec<String> = group_keys.into_iter().collect();
        self.busy.extend(keys.iter().cloned());
        self.running.insert(id, (now, keys));
        let (store, clock, done) = (self.store.clone(), self.clock, self.done_tx.clone());
        let fence = self.lease.clone();
        tokio::task::spawn(async move {
            let writes: Vec<StoreWrite> = group
                .iter()
                .flat_map(|b| b.writes.iter().cloned())
                .collect();
            let fenced = fence.as_ref().filter(|l| !l.holds());
            let was_fenced = fenced.is_some() && !writes.is_empty();
            let results = if writes.is_empty() {
                Vec::new()
            } else if let Some(lease) = fenced {
                // Our lease may have run out: write nothing (the node hears "unavailable").
                lease.dropped();
                let e = StoreError::Retryable("fenced: the node's lease does not hold".into());
                writes.iter().map(|_| Err(e.clone())).collect()
            } else {
                apply_group(&store, writes, clock).await
            };
            let _ = done.send(Done {
                id,
                batches: group,
                results,
                fenced: was_fenced,
            });
        });
    }

    /// A group commit ended: send what is durable, report what is not.
    async fn finish(&mut self, done: Done) {
        if let Some((_, keys)) = self.running.remove(&done.id) {
            for k in keys {
                self.busy.remove(&k);
            }
        }
        let mut offset = 0;
        let mut committed = Vec::new();
        for batch in done.batches {
            let n = batch.writes.len();
            let answers = done.results.get(offset..offset + n).unwrap_or(&[]);
            offset += n;
            let failed: Vec<(usize, &StoreWrite, &StoreError)> = batch
                .writes
                .iter()
                .zip(answers)
                .enumerate()
                .filter_map(|(i, (w, r))| r.as_ref().err().map(|e| (i, w, e)))
                .collect();
            for (w, r) in batch.writes.iter().zip(answers) {
                if matches!(r, Err(StoreError::Fenced)) {
                    if let Some(l) = &self.lease {
                        l.refused_by_term();
                    }
                }
                match (w.unfenced(), r) {
                    (StoreWrite::Put { key, version, .. }, Err(_)) => {
                        // Reported below, as the next failure.
                        self.unborn
                            .insert(key.clone(), (*version, self.reported + 1));
                    }
                    (w, Ok(())) => {
                        self.unborn.remove(w.key());
                    }
                    _ => {}
                }
            }
            if failed.is_empty() {
                if batch.report {
                    committed.push(batch.id);
                }
                if self.stale(&batch) {
                    // Written while the lease held; its messages would speak for calls
                    // the node has forgotten since.
                    if let Some(l) = &self.lease {
                        l.dropped();
                    }
                } else {
                    self.send_all(batch.transmits).await;
                }
                continue;
            }
            // A message may reveal only state that is durable; the core says which failed
            // writes its transmits reveal.
            let held = batch.held_by(failed.iter().map(|(_, w, _)| *w));
            let errors = failed
                .iter()
                .map(|(i, _, e)| {
                    (
                        *i,
                        if done.fenced {
                            WriteError::Fenced
                        } else {
                            kind(e)
                        },
                    )
                })
                .collect();
            if held {
                let errors: Vec<&StoreError> = failed.iter().map(|(_, _, e)| *e).collect();
                warn!(
                    writes = n,
                    ?errors,
                    "store commit failed; transmits held back"
                );
            } else if !self.stale(&batch) {
                self.send_all(batch.transmits).await;
            }
            let id = batch.id;
            self.report_failed(id, errors);
            // Whatever failed is read back, so that the node learns what the store holds
            // (after a fenced commit only bindings: nothing was tried, and the calls wait
            // to be loaded again). Spawned after the failure is reported, so that the node
            // always hears of a failure before its read-back.
            for (_, w, _) in &failed {
                let binding = matches!(Key::parse(w.key()), Some(Key::Reg(_)));
                if done.fenced && !binding {
                    continue;
                }
                self.read_back(w.key());
            }
        }
        self.report_committed(committed);
    }

    /// Reads `key` back for the node, in a task of its own (see [`read_back`]).
    fn read_back(&self, key: &str) {
        let (store, results) = (self.store.clone(), self.results.clone());
        tokio::task::spawn(read_back(store, key.to_string(), results, self.clock));
    }

    /// Whether a write of `b` expects a version that a failed put would have made.
    fn built_on_unborn(&self, b: &Batch) -> bool {
        b.writes.iter().any(|w| {
            self.unborn
                .get(w.key())
                .is_some_and(|(version, report)| b.heard < *report && expects(w, *version))
        })
    }

    /// Fails batch `b` without writing: each write lost its compare-and-swap (the version
    /// it expects never came to be), its transmits are held back as after any failed
    /// write, and what it would have written is read back for the node.
    async fn fail_unwritten(&mut self, mut b: Batch) {
        for w in &b.writes {
            if let StoreWrite::Put { key, version, .. } = w.unfenced() {
                self.unborn
                    .insert(key.clone(), (*version, self.reported + 1));
            }
        }
        if !b.held_by(b.writes.iter()) {
            self.send_all(std::mem::take(&mut b.transmits)).await;
        }
        let errors = (0..b.writes.len())
            .map(|i| (i, WriteError::Conflict))
            .collect();
        self.report_failed(b.id, errors);
        for w in &b.writes {
            self.read_back(w.key());
        }
    }

    async fn send_all(&mut self, transmits: Vec<Transmit>) {
        for t in transmits {
            self.sender.send(t).await;
        }
    }
}

/// Whether `w` expects a version in `unborn` (one a failed put would have made).
fn built_on(unborn: &HashMap<String, u64>, w: &StoreWrite) -> bool {
    unborn.get(w.key()).is_some_and(|v| expects(w, *v))
}

/// Whether `w` is a compare-and-swap on `version`.
fn expects(w: &StoreWrite, version: u64) -> bool {
    match w.unfenced() {
        StoreWrite::Put { expect, .. } => *expect == Some(version),
        StoreWrite::Delete { expect, .. } => *expect == version,
        StoreWrite::Fenced { .. } => false,
    }
}

/// Applies a group commit's writes. A key the group writes more than once (a call changed
/// twice before one commit) is written in rounds, in order, so that a write whose expected
/// version an earlier write failed to make fails unwritten (see `Committer::unborn`)
/// instead of being tried. Most groups need one round.
async fn apply_group<S: Store>(
    store: &S,
    writes: Vec<StoreWrite>,
    clock: Clock,
) -> Vec<Result<(), StoreError>> {
    let mut results: Vec<Option<Result<(), StoreError>>> = vec![None; writes.len()];
    let mut unborn: HashMap<String, u64> = HashMap::new();
    let mut left: Vec<usize> = (0..writes.len()).collect();
    while !left.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            left.iter().partition(|i| seen.insert(writes[**i].key()));
        let (doomed, tried): (Vec<usize>, Vec<usize>) = round
            .into_iter()
            .partition(|i| built_on(&unborn, &writes[*i]));
        for i in doomed {
            results[i] = Some(Err(StoreError::Conflict));
            if let StoreWrite::Put { key, version, .. } = writes[i].unfenced() {
                unborn.insert(key.clone(), *version);
            }
        }
        let batch = tried.iter().map(|i| writes[*i].clone()).collect();
        let answers = apply_resolved(store, batch, || clock.now(), STORE_PATIENCE).await;
        for (i, answer) in tried.into_iter().zip(answers) {
            if let (StoreWrite::Put { key, version, .. }, Err(_)) = (writes[i].unfenced(), &answer)
            {
                unborn.insert(key.clone(), *version);
            }
            results[i] = Some(answer);
        }
        left = later;
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Fatal("no answer".into()))))
        .collect()
}

/// The core's name for a store error.
fn kind(e: &StoreError) -> WriteError {
    match e {
        // A chore of a deposed leader: for the node, someone else decides the record now.
        StoreError::Conflict | StoreError::Fenced => WriteError::Conflict,
        StoreError::Retryable(_) => WriteError::Unavailable,
        StoreError::Ambiguous(_) => WriteError::Ambiguous,
        StoreError::Fatal(_) => WriteError::Fatal,
    }
}

/// After a failed write the node does not know what the store holds at `key` (the write
/// may or may not have happened): read it, as long as it takes, and tell the node.
async fn read_back<S: Store>(
    store: S,
    key: String,
    results: mpsc::UnboundedSender<Input>,
    clock: Clock,
) {
    let mut delay = 100;
    loop {
        match store.get(&key, clock.now()).await {
            Ok(record) => {
                let _ = results.send(Input::Record { key, record });
                return;
            }
            Err(StoreError::Fatal(e)) => {
                warn!(%key, error = %e, "cannot read back a failed write");
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay = (delay * 2).min(2_000);
            }
        }
    }
}
