//! The simulated store: one server on its own simulated node, and a client that implements
//! the same [`Store`] contract as the real backends, over the simulated network.
//!
//! The server applies each operation atomically when it handles it, so the store is
//! linearizable; faults are injected on cue: latency, unavailability (a leader election:
//! `Retryable`), and ambiguous writes (the answer is lost, so the client times out: the write
//! happened before that, or it never happens, or it lands late, up to 5 s after the client
//! gave up and may have read the key back, as a write stuck in a Raft log can).
//!
//! The client records what it asked and what it was told about `call/` keys (which have no
//! leases) in a [`History`], which the world checks for linearizability at the end. Partitions come from madsim
//! (a clogged link looks like a store that never answers).

pub use crate::terms::{TermLog, Terms};
use crate::trace::{sim_ms, Trace};
use drongo::store::linearizability as lin;
use drongo::store::{Change, MemStore, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use madsim::net::Endpoint;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Port the store server listens on.
pub const STORE_PORT: u16 = 2379;
/// How long a client waits for an answer before calling it lost.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// The tag requests travel under; answers travel under the request's id.
const REQUEST_TAG: u64 = 0;

enum Op {
    Get {
        key: String,
        now: UnixMillis,
    },
    Scan {
        prefix: String,
        limit: usize,
        now: UnixMillis,
    },
    Apply {
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    },
}

enum Answer {
    Record(Option<StoredRecord>),
    Records(Vec<StoredRecord>),
    Applied(Vec<Result<(), StoreError>>),
}

type Reply = Result<Answer, StoreError>;

/// What the server does wrong, set by the fault plan while the run goes on.
#[derive(Debug, Clone, Default)]
pub struct StoreFaults {
    /// Answer every request `Retryable` (no leader).
    pub unavailable: bool,
    /// Probability that a write group's answer is lost; half of those were applied.
    pub ambiguous_rate: f64,
    /// Extra service time per request, drawn from this range (milliseconds).
    pub latency_ms: (u64, u64),
}

struct ServerState {
    faults: StoreFaults,
    rng: ChaCha8Rng,
}

/// The server's data and fault switches, shared with the world (which reads the data
/// directly when it checks invariants).
#[derive(Clone)]
pub struct StoreServer {
    pub data: MemStore,
    /// What the store took of the leaders' office (see [`TermLog`]).
    pub leaders: Terms,
    state: Arc<Mutex<ServerState>>,
    trace: Trace,
}

impl StoreServer {
    pub fn new(seed: u64, trace: Trace) -> Self {
        Self {
            data: MemStore::default(),
            leaders: Terms::default(),
            state: Arc::new(Mutex::new(ServerState {
                faults: StoreFaults::default(),
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5709_e5e7),
            })),
            trace,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_faults(&self, f: impl FnOnce(&mut StoreFaults)) {
        f(&mut self.lock().faults);
    }

    /// Serves requests until the node is killed. Each request is handled in its own task
    /// (after its latency), atomically against the data.
    pub async fn serve(self, addr: SocketAddr) {
        let ep = match Endpoint::bind(addr).await {
            Ok(ep) => ep,
            Err(e) => {
                self.trace
                    .violation("store", format_args!("cannot bind: {e}"));
                return;
            }
        };
        while let Ok((payload, from)) = ep.recv_from_raw(REQUEST_TAG).await {
            let Ok(req) = payload.downcast::<(u64, Op)>() else {
                continue;
            };
            let (id, op) = *req;
            let (delay, fate) = {
                let mut s = self.lock();
                let (lo, hi) = s.faults.latency_ms;
                let delay = lo + s.rng.next_u64() % (hi.saturating_sub(lo) + 1);
                let roll = (s.rng.next_u64() % 1_000_000) as f64 / 1_000_000.0;
                let fate = if s.faults.unavailable {
                    Fate::Unavailable
                } else if matches!(op, Op::Apply { .. }) && roll < s.faults.ambiguous_rate {
                    match s.rng.next_u64() % 3 {
                        0 => Fate::AppliedAnswerLost,
                        1 => Fate::Lost,
                        _ => Fate::AppliedLate(500 + s.rng.next_u64() % 4_501),
                    }
                } else {
                    Fate::Normal
                };
                (delay, fate)
            };
            let server = self.clone();
            let ep = ep.clone();
            tokio::task::spawn(async move {
                madsim::time::sleep(Duration::from_millis(delay)).await;
                let reply = server.handle(op, &fate, from).await;
                if let Some(reply) = reply {
                    let _ = ep.send_to_raw(from, id, Box::new(reply)).await;
                }
            });
        }
    }

    async fn handle(&self, op: Op, fate: &Fate, from: SocketAddr) -> Option<Reply> {
        let who = format!("store<{}", from.ip());
        match fate {
            Fate::Unavailable => {
                self.trace.log(&who, "unavailable");
                return Some(Err(StoreError::Retryable("no leader".into())));
            }
            Fate::Lost => {
                self.trace.log(&who, "request lost (not applied)");
                return None;
            }
            Fate::AppliedLate(ms) => {
                self.trace.log(
                    &who,
                    format_args!("answer lost; the write lands in {ms} ms"),
                );
                if let Op::Apply { writes, now } = op {
                    let (data, trace, ms) = (self.data.clone(), self.trace.clone(), *ms);
                    let leaders = self.leaders.clone();
                    tokio::task::spawn(async move {
                        madsim::time::sleep(Duration::from_millis(ms)).await;
                        let summary: Vec<String> = writes.iter().map(describe).collect();
                        let records = Terms::among(&writes);
                        let r = data.apply(writes, now).await;
                        leaders.note(records, from, &r);
                        trace.log(
                            &who,
                            format_args!(
                                "late apply [{}] -> [{}]",
                                summary.join(", "),
                                outcomes(&r)
                            ),
                        );
                    });
                }
                return None;
            }
            _ => {}
        }
        let reply = match op {
            Op::Get { key, now } => {
                let r = self.data.get(&key, now).await;
                self.trace.log(
                    &who,
                    format_args!(
                        "get {key} -> {}",
                        version(r.as_ref().ok().cloned().flatten())
                    ),
                );
                r.map(Answer::Record)
            }
            Op::Scan { prefix, limit, now } => {
                let r = self.data.scan(&prefix, limit, now).await;
                let n = r.as_ref().map_or(0, Vec::len);
                self.trace
                    .log(&who, format_args!("scan '{prefix}' -> {n} records"));
                r.map(Answer::Records)
            }
            Op::Apply { writes, now } => {
                let summary: Vec<String> = writes.iter().map(describe).collect();
                let records = Terms::among(&writes);
                let r = self.data.apply(writes, now).await;
                self.leaders.note(records, from, &r);
                self.trace.log(
                    &who,
                    format_args!("apply [{}] -> [{}]", summary.join(", "), outcomes(&r)),
                );
                r.map(Answer::Applied)
            }
        };
        if matches!(fate, Fate::AppliedAnswerLost) {
            self.trace.log(&who, "answer lost (applied)");
            return None;
        }
        Some(reply)
    }
}

enum Fate {
    Normal,
    Unavailable,
    Lost,
    AppliedAnswerLost,
    /// Applied this many milliseconds later; the answer is lost.
    AppliedLate(u64),
}

/// "ok, conflict, …" for a trace line.
fn outcomes(r: &Result<Vec<Result<(), StoreError>>, StoreError>) -> String {
    match r {
        Ok(rs) => rs
            .iter()
            .map(|x| match x {
                Ok(()) => "ok",
                Err(StoreError::Fenced) => "fenced",
                Err(_) => "conflict",
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => "error".into(),
    }
}

fn version(r: Option<StoredRecord>) -> String {
    r.map_or("none".into(), |r| format!("v{}", r.version))
}

fn describe(w: &StoreWrite) -> String {
    match w {
        StoreWrite::Fenced { term, write } => format!("{} fenced t{term}", describe(write)),
        StoreWrite::Put {
            key,
            version,
            expect,
            ..
        } => match expect {
            Some(e) => format!("put {key} v{e}->v{version}"),
            None => format!("put {key} new v{version}"),
        },
        StoreWrite::Delete { key, expect } => format!("del {key} v{expect}"),
    }
}

/// The client a simulated Drongo node uses. Created inside that node, so that its traffic
/// comes from the node's address (and a partition of the node cuts it).
#[derive(Clone)]
pub struct SimStore {
    ep: Endpoint,
    server: SocketAddr,
    next_id: Arc<AtomicU64>,
    history: History,
    /// The mutant of `WorldSpec::mutant_private_bindings`: this client's `reg/` keys live
    /// under this prefix instead, out of the other members' sight.
    private: Option<String>,
    /// The registrar's mutants (`crate::mutants`).
    reg_mutants: crate::mutants::RegMutants,
}

/// Operations on `call/` keys as the clients saw them, in true simulated time.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Vec<lin::Op>>>);

impl History {
    pub fn ops(&self) -> Vec<lin::Op> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds `op`; returns its place, for `settle`.
    fn push(&self, op: lin::Op) -> usize {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.push(op);
        v.len() - 1
    }

    /// The answer to the write at `at` came at `ret`. ("Retryable", nothing happened,
    /// stays ambiguous: that allows "never happened".)
    fn settle(&self, at: usize, ret: u64, outcome: lin::Outcome) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(op) = v.get_mut(at) {
            op.ret = ret;
            if let lin::Kind::Write { outcome: o, .. } = &mut op.kind {
                *o = outcome;
            }
        }
    }
}

/// How much earlier than its writer's clock says a record may expire for its readers (their
/// clocks differ by up to twice the largest skew a scenario uses).
const EXPIRY_SLACK_MS: u64 = 5_000;

/// Whether `key`'s operations go into the history (call records, whose only expiry is a
/// tombstone's, modelled as a delete).
fn recorded(key: &str) -> bool {
    key.starts_with(drongo_core::store::CALL_PREFIX)
}

impl SimStore {
    pub async fn connect(server: SocketAddr, history: History) -> std::io::Result<Self> {
        Ok(Self {
            ep: Endpoint::bind("0.0.0.0:0").await?,
            server,
            next_id: Arc::new(AtomicU64::new(1)),
            history,
            private: None,
            reg_mutants: Default::default(),
        })
    }

    /// See [`SimStore::private`].
    pub fn with_private_bindings(mut self, prefix: Option<String>) -> Self {
        self.private = prefix;
        self
    }

    /// See [`crate::mutants`].
    pub fn with_reg_mutants(mut self, m: crate::mutants::RegMutants) -> Self {
        self.reg_mutants = m;
        self
    }

    /// `key` as this client stores it.
    fn hide(&self, key: &str) -> String {
        let reg = drongo_core::store::REG_PREFIX;
        match (&self.private, key.strip_prefix(reg)) {
            (Some(p), Some(rest)) => format!("{p}{rest}"),
            _ => key.to_string(),
        }
    }

    /// A record as this client's node sees it.
    /// `w` with its key hidden (see [`SimStore::hide`]).
    fn rekey(&self, w: &mut StoreWrite) {
        match w {
            StoreWrite::Put { key, .. } | StoreWrite::Delete { key, .. } => *key = self.hide(key),
            StoreWrite::Fenced { write, .. } => self.rekey(write),
        }
    }

    fn show(&self, mut r: StoredRecord) -> StoredRecord {
        if let Some(rest) = self
            .private
            .as_ref()
            .and_then(|p| r.key.strip_prefix(p.as_str()))
        {
            r.key = format!("{}{rest}", drongo_core::store::REG_PREFIX);
        }
        r
    }

    /// Sends `op` and waits for its answer; `None` when none came in time.
    async fn call(&self, op: Op) -> Option<Reply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if self
            .ep
            .send_to_raw(self.server, REQUEST_TAG, Box::new((id, op)))
            .await
            .is_err()
        {
            return None;
        }
        let answer = madsim::time::timeout(CLIENT_TIMEOUT, self.ep.recv_from_raw(id)).await;
        let (payload, _) = answer.ok()?.ok()?;
        payload.downcast::<Reply>().ok().map(|r| *r)
    }
}

fn unexpected() -> StoreError {
    StoreError::Fatal("unexpected answer".into())
}

impl Store for SimStore {
    /// Polls scans, as a backend without a watch stream must: only the final state of a key
    /// between two polls is seen.
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        let period = Duration::from_millis(200);
        drongo::store::poll_watch(self.clone(), prefix, period, drongo::runtime::now_ms).await
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        let op = Op::Get {
            key: self.hide(key),
            now,
        };
        let call = sim_ms();
        match self.call(op).await {
            Some(Ok(Answer::Record(r))) => {
                if recorded(key) {
                    self.history.push(lin::Op {
                        key: key.to_string(),
                        call,
                        ret: sim_ms(),
                        kind: lin::Kind::Read {
                            seen: r.as_ref().map(|r| r.version),
                        },
                    });
                }
                Ok(r.map(|r| self.show(r)))
            }
            Some(Ok(_)) => Err(unexpected()),
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Retryable("store timeout".into())),
        }
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let op = Op::Scan {
            prefix: self.hide(prefix),
            limit,
            now,
        };
        match self.call(op).await {
            Some(Ok(Answer::Records(r))) => Ok(r.into_iter().map(|r| self.show(r)).collect()),
            Some(Ok(_)) => Err(unexpected()),
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Retryable("store timeout".into())),
        }
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if !self.reg_mutants.any() {
            return self.apply_writes(writes, now).await;
        }
        let (kept, dropped) = crate::mutants::bend(self, self.reg_mutants, writes, now).await;
        let answers = self.apply_writes(kept, now).await?;
        Ok(crate::mutants::splice(answers, &dropped))
    }
}

impl SimStore {
    async fn apply_writes(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // Each write goes into the history as ambiguous when it is sent (a node killed
        // while it waits never hears back) and is settled by the answer: (position in the
        // group, place in the history).
        let call = sim_ms();
        let asked: Vec<(usize, usize)> = writes
            .iter()
            .enumerate()
            .filter(|(_, w)| recorded(w.key()))
            .filter_map(|(i, w)| {
                let (key, expect, new) = match w.unfenced() {
                    StoreWrite::Put {
                        key,
                        version,
                        expect,
                        ..
                    } => (key.clone(), *expect, Some(*version)),
                    StoreWrite::Delete { key, expect } => (key.clone(), Some(*expect), None),
                    StoreWrite::Fenced { .. } => return None,
                };
                let kind = lin::Kind::Write {
                    expect,
                    new,
                    outcome: lin::Outcome::Ambiguous,
                };
                let op = lin::Op {
                    key,
                    call,
                    ret: call,
                    kind,
                };
                Some((i, self.history.push(op)))
            })
            .collect();
        // A put that expires (a call's tombstone) is removed by the store itself: that
        // removal goes into the history as a delete that may happen any time from a little
        // before the expiry (readers' clocks differ by up to the skew bound) on.
        for w in &writes {
            if let StoreWrite::Put {
                key,
                version,
                expires_at: Some(at),
                ..
            } = w.unfenced()
            {
                if recorded(key) {
                    let due = call + at.saturating_sub(now);
                    self.history.push(lin::Op {
                        key: key.clone(),
                        call: due.saturating_sub(EXPIRY_SLACK_MS),
                        ret: due,
                        kind: lin::Kind::Write {
                            expect: Some(*version),
                            new: None,
                            outcome: lin::Outcome::Ambiguous,
                        },
                    });
                }
            }
        }
        let writes = writes
            .into_iter()
            .map(|mut w| {
                self.rekey(&mut w);
                w
            })
            .collect();
        let answer = match self.call(Op::Apply { writes, now }).await {
            Some(Ok(Answer::Applied(r))) => Ok(r),
            Some(Ok(_)) => Err(unexpected()),
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Ambiguous("store timeout".into())),
        };
        let ret = sim_ms();
        for (i, at) in asked {
            let outcome = match &answer {
                Ok(rs) => match rs.get(i) {
                    Some(Ok(())) => lin::Outcome::Ok,
                    Some(Err(StoreError::Conflict)) => lin::Outcome::Conflict,
                    Some(Err(StoreError::Fenced)) => lin::Outcome::Refused,
                    _ => lin::Outcome::Ambiguous,
                },
                _ => lin::Outcome::Ambiguous,
            };
            self.history.settle(at, ret, outcome);
        }
        answer
    }
}
