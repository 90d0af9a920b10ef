//! The simulated store: one server on its own simulated node, and a client that implements
//! the same [`Store`] contract as the real backends, over the simulated network.
//!
//! The server applies each operation atomically when it handles it, so the store is
//! linearizable; faults are injected on cue: latency, unavailability (a leader election:
//! `Retryable`), and ambiguous writes (the write happened or not, but the answer is lost, so
//! the client times out: the classic timeout after commit). Partitions come from madsim
//! (a clogged link looks like a store that never answers).

use crate::trace::Trace;
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
    state: Arc<Mutex<ServerState>>,
    trace: Trace,
}

impl StoreServer {
    pub fn new(seed: u64, trace: Trace) -> Self {
        Self {
            data: MemStore::default(),
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
                    if s.rng.next_u64().is_multiple_of(2) {
                        Fate::AppliedAnswerLost
                    } else {
                        Fate::Lost
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
                let r = self.data.apply(writes, now).await;
                let outcome: Vec<&str> = match &r {
                    Ok(rs) => rs
                        .iter()
                        .map(|x| if x.is_ok() { "ok" } else { "conflict" })
                        .collect(),
                    Err(_) => vec!["error"],
                };
                self.trace.log(
                    &who,
                    format_args!("apply [{}] -> [{}]", summary.join(", "), outcome.join(", ")),
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
}

fn version(r: Option<StoredRecord>) -> String {
    r.map_or("none".into(), |r| format!("v{}", r.version))
}

fn describe(w: &StoreWrite) -> String {
    match w {
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
}

impl SimStore {
    pub async fn connect(server: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            ep: Endpoint::bind("0.0.0.0:0").await?,
            server,
            next_id: Arc::new(AtomicU64::new(1)),
        })
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
        let period = Duration::from_millis(50);
        drongo::store::poll_watch(self.clone(), prefix, period, drongo::runtime::now_ms).await
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        let op = Op::Get {
            key: key.to_string(),
            now,
        };
        match self.call(op).await {
            Some(Ok(Answer::Record(r))) => Ok(r),
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
            prefix: prefix.to_string(),
            limit,
            now,
        };
        match self.call(op).await {
            Some(Ok(Answer::Records(r))) => Ok(r),
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
        match self.call(Op::Apply { writes, now }).await {
            Some(Ok(Answer::Applied(r))) => Ok(r),
            Some(Ok(_)) => Err(unexpected()),
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Ambiguous("store timeout".into())),
        }
    }
}
