//! Store backends behind one contract.
//!
//! # The contract
//! - Single-key operations are linearizable.
//! - Every record has a version. A [`StoreWrite::Put`] names the version it replaces
//!   (`expect`, `None` to create) and succeeds only if that is the current version
//!   (compare-and-swap); [`StoreWrite::Delete`] likewise.
//! - A record whose `expires_at` has passed is absent to every reader (a lease), whether or
//!   not the backend has removed it yet.
//! - [`Store::apply`] commits a group of writes with one durable commit and answers each
//!   write on its own: a lost CAS fails that write only.
//! - [`Store::watch`] reports changes under a prefix, as each backend can honestly give
//!   them: the embedded and in-memory stores from their own writes (they have one writer
//!   process), etcd from its watch stream, TiKV (which has no watch) by polling scans.
//! - Errors are typed: [`StoreError::Conflict`] (the CAS lost), [`StoreError::Retryable`]
//!   (nothing happened, try again), [`StoreError::Ambiguous`] (it may have happened: re-read
//!   before acting), [`StoreError::Fatal`].

use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd;
// The embedded store does blocking file I/O, which a simulation cannot run; the simulated
// node uses io-sim's store instead.
#[cfg(not(madsim))]
mod redb_store;
#[cfg(feature = "tikv")]
mod tikv;

#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;
#[cfg(not(madsim))]
pub use redb_store::RedbStore;
use std::sync::{Arc, Mutex};
#[cfg(feature = "tikv")]
pub use tikv::TikvStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    Conflict,
    Retryable(String),
    Ambiguous(String),
    Fatal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict => write!(f, "conflict"),
            StoreError::Retryable(e) => write!(f, "retryable: {e}"),
            StoreError::Ambiguous(e) => write!(f, "ambiguous: {e}"),
            StoreError::Fatal(e) => write!(f, "fatal: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A change seen under a watched prefix: the record as it is now (`None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub record: Option<StoredRecord>,
}

/// The store interface every backend implements.
pub trait Store: Send + Sync + 'static {
    /// Changes under `prefix` from now on, until the receiver is dropped.
    fn watch(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<Change>, StoreError>> + Send;

    /// The live record at `key`.
    fn get(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<StoredRecord>, StoreError>> + Send;

    /// Live records whose key starts with `prefix`, in key order, at most `limit`.
    fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<StoredRecord>, StoreError>> + Send;

    /// Applies `writes` in order with one durable commit; one result per write.
    fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<Result<(), StoreError>>, StoreError>> + Send;
}

/// Checks one write against the current record (expired records count as absent).
fn check(
    current: Option<&StoredRecord>,
    w: &StoreWrite,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let live = current.filter(|r| r.is_live(now));
    let version = live.map(|r| r.version);
    let ok = match w {
        StoreWrite::Put { expect, .. } => version == *expect,
        StoreWrite::Delete { expect, .. } => version == Some(*expect),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

pub(crate) fn record_of(w: StoreWrite) -> Option<StoredRecord> {
    match w {
        StoreWrite::Put {
            key,
            value,
            version,
            expires_at,
            ..
        } => Some(StoredRecord {
            key,
            value,
            version,
            expires_at,
        }),
        StoreWrite::Delete { .. } => None,
    }
}

/// Applies `writes` and settles every answer the contract allows to be unsettled, as every
/// caller must: `Retryable` is tried again with backoff (up to `deadline_ms`), `Ambiguous` is
/// settled by reading the key back (the write happened if the record now has the version we
/// wrote, or is gone for a delete; if the record is still what we expected, the write is
/// tried again). What remains is `Conflict` or `Fatal`, or the error of a store that stayed
/// unreachable until the deadline.
pub async fn apply_resolved<S: Store>(
    store: &S,
    writes: Vec<StoreWrite>,
    now: impl Fn() -> UnixMillis,
    deadline_ms: u64,
) -> Vec<Result<(), StoreError>> {
    let started = now();
    let mut results: Vec<Option<Result<(), StoreError>>> = vec![None; writes.len()];
    let mut delay = 20u64;
    loop {
        let pending: Vec<usize> = (0..writes.len())
            .filter(|i| {
                !matches!(
                    results[*i],
                    Some(Ok(()))
                        | Some(Err(StoreError::Conflict))
                        | Some(Err(StoreError::Fatal(_)))
                )
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        if now().saturating_sub(started) > deadline_ms {
            break;
        }
        let batch: Vec<StoreWrite> = pending.iter().map(|i| writes[*i].clone()).collect();
        let answers = match store.apply(batch, now()).await {
            Ok(a) => a,
            Err(e) => vec![e; 1]
                .into_iter()
                .cycle()
                .take(pending.len())
                .map(Err)
                .collect(),
        };
        for (i, answer) in pending.iter().zip(answers) {
            results[*i] = Some(match answer {
                Err(StoreError::Ambiguous(e)) => settle(store, &writes[*i], now(), e).await,
                other => other,
            });
        }
        let retry = results.iter().any(|r| {
            matches!(
                r,
                Some(Err(StoreError::Retryable(_))) | Some(Err(StoreError::Ambiguous(_)))
            )
        });
        if !retry {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        delay = (delay * 2).min(1_000);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(StoreError::Retryable("store unreachable".into()))))
        .collect()
}

/// After an ambiguous answer: did the write happen? `Ok` if so, `Retryable` if the record is
/// unchanged (so the write may be tried again), `Conflict` if someone else changed it.
async fn settle<S: Store>(
    store: &S,
    w: &StoreWrite,
    now: UnixMillis,
    why: String,
) -> Result<(), StoreError> {
    let current = match store.get(w.key(), now).await {
        Ok(c) => c.map(|r| r.version),
        Err(_) => return Err(StoreError::Ambiguous(why)),
    };
    match w {
        StoreWrite::Put {
            version, expect, ..
        } => {
            if current == Some(*version) {
                Ok(())
            } else if current == *expect {
                Err(StoreError::Retryable(format!("not applied: {why}")))
            } else {
                Err(StoreError::Conflict)
            }
        }
        StoreWrite::Delete { expect, .. } => match current {
            None => Ok(()),
            Some(v) if v == *expect => Err(StoreError::Retryable(format!("not applied: {why}"))),
            Some(_) => Err(StoreError::Conflict),
        },
    }
}

/// A backend whose writes are network calls, one key at a time.
#[cfg(any(feature = "etcd", feature = "tikv"))]
pub(crate) trait KeyWriter: Clone + Send + Sync + 'static {
    fn write_one(
        &self,
        w: StoreWrite,
        now: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Applies `writes` through `store`, concurrently across keys and in order within a key,
/// and answers each write in its place.
#[cfg(any(feature = "etcd", feature = "tikv"))]
pub(crate) async fn apply_by_key<W: KeyWriter>(
    store: &W,
    writes: Vec<StoreWrite>,
    now: UnixMillis,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let n = writes.len();
    let mut chains: BTreeMap<String, Vec<(usize, StoreWrite)>> = BTreeMap::new();
    for (i, w) in writes.into_iter().enumerate() {
        chains.entry(w.key().to_string()).or_default().push((i, w));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, chain) in chains {
        let store = store.clone();
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(chain.len());
            for (i, w) in chain {
                out.push((i, store.write_one(w, now).await));
            }
            out
        });
    }
    let mut results: Vec<Result<(), StoreError>> = (0..n)
        .map(|_| Err(StoreError::Retryable("not run".into())))
        .collect();
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|e| StoreError::Fatal(e.to_string()))?;
        for (i, r) in done {
            if let Some(slot) = results.get_mut(i) {
                *slot = r;
            }
        }
    }
    Ok(results)
}

/// A watch for a backend that has none: scans `prefix` every `period` and reports what
/// changed since the last scan (a new version, or a key gone: deleted or past its expiry at
/// `now()`). A change undone within one period is not seen. TiKV and the simulated store
/// use it.
pub async fn poll_watch<S: Store + Clone>(
    store: S,
    prefix: &str,
    period: std::time::Duration,
    now: impl Fn() -> UnixMillis + Send + 'static,
) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let prefix = prefix.to_string();
    let versions = |records: Vec<StoredRecord>| -> BTreeMap<String, (u64, StoredRecord)> {
        records
            .into_iter()
            .map(|r| (r.key.clone(), (r.version, r)))
            .collect()
    };
    let mut seen = versions(store.scan(&prefix, usize::MAX, now()).await?);
    tokio::task::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Ok(records) = store.scan(&prefix, usize::MAX, now()).await else {
                continue;
            };
            let next = versions(records);
            let changed = next
                .iter()
                .filter(|(k, (v, _))| seen.get(*k).map(|(s, _)| s) != Some(v))
                .map(|(k, (_, r))| Change {
                    key: k.clone(),
                    record: Some(r.clone()),
                });
            let gone = seen
                .keys()
                .filter(|k| !next.contains_key(*k))
                .map(|k| Change {
                    key: k.clone(),
                    record: None,
                });
            for change in changed.chain(gone).collect::<Vec<_>>() {
                if tx.send(change).await.is_err() {
                    return;
                }
            }
            seen = next;
        }
    });
    Ok(rx)
}

/// Fans the changes made through one store handle out to its watchers.
#[derive(Debug, Clone)]
pub(crate) struct LocalChanges(tokio::sync::broadcast::Sender<Change>);

impl Default for LocalChanges {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(4096).0)
    }
}

impl LocalChanges {
    pub(crate) fn publish(&self, w: &StoreWrite) {
        let change = Change {
            key: w.key().to_string(),
            record: record_of(w.clone()),
        };
        let _ = self.0.send(change);
    }

    pub(crate) fn watch(&self, prefix: &str) -> tokio::sync::mpsc::Receiver<Change> {
        let mut rx = self.0.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(4096);
        let prefix = prefix.to_string();
        tokio::task::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(c) if c.key.starts_with(&prefix) => {
                        if tx.send(c).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        out
    }
}

/// In-memory backend (`mem:`): for tests and for running without persistence.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    map: Arc<Mutex<BTreeMap<String, StoredRecord>>>,
    changes: LocalChanges,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredRecord>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        Ok(self.changes.watch(prefix))
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.lock().get(key).filter(|r| r.is_live(now)).cloned())
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r)
            .filter(|r| r.is_live(now))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut map = self.lock();
        Ok(writes
            .into_iter()
            .map(|w| {
                check(map.get(w.key()), &w, now)?;
                self.changes.publish(&w);
                let key = w.key().to_string();
                match record_of(w) {
                    Some(r) => map.insert(key, r),
                    None => map.remove(&key),
                };
                Ok(())
            })
            .collect())
    }
}

/// A backend chosen by URL: `mem:`, `file:DIR`, `etcd://HOST:PORT,...` (feature `etcd`) or
/// `tikv://PD1,PD2,...` (feature `tikv`).
#[derive(Clone)]
pub enum AnyStore {
    Mem(MemStore),
    #[cfg(not(madsim))]
    File(RedbStore),
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdStore>),
    #[cfg(feature = "tikv")]
    Tikv(Box<TikvStore>),
}

impl AnyStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url == "mem:" {
            Ok(AnyStore::Mem(MemStore::default()))
        } else if let Some(dir) = url.strip_prefix("file:") {
            #[cfg(not(madsim))]
            {
                Ok(AnyStore::File(RedbStore::open(Path::new(dir))?))
            }
            #[cfg(madsim)]
            {
                let _ = Path::new(dir);
                Err(StoreError::Fatal(
                    "no embedded store in a simulation".into(),
                ))
            }
        } else if let Some(pd) = url.strip_prefix("tikv://") {
            #[cfg(feature = "tikv")]
            {
                let pd: Vec<String> = pd.split(',').map(str::to_string).collect();
                Ok(AnyStore::Tikv(Box::new(TikvStore::connect(&pd).await?)))
            }
            #[cfg(not(feature = "tikv"))]
            {
                let _ = pd;
                Err(StoreError::Fatal(
                    "this build has no TiKV backend: build with --features tikv".into(),
                ))
            }
        } else if let Some(endpoints) = url.strip_prefix("etcd://") {
            #[cfg(feature = "etcd")]
            {
                let eps: Vec<String> = endpoints.split(',').map(str::to_string).collect();
                Ok(AnyStore::Etcd(Box::new(EtcdStore::connect(&eps).await?)))
            }
            #[cfg(not(feature = "etcd"))]
            {
                let _ = endpoints;
                Err(StoreError::Fatal(
                    "this build has no etcd backend: build with --features etcd".into(),
                ))
            }
        } else {
            Err(StoreError::Fatal(format!("unknown store URL {url}")))
        }
    }
}

impl Store for AnyStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        match self {
            AnyStore::Mem(s) => s.watch(prefix).await,
            #[cfg(not(madsim))]
            AnyStore::File(s) => s.watch(prefix).await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(s) => s.watch(prefix).await,
            #[cfg(feature = "tikv")]
            AnyStore::Tikv(s) => s.watch(prefix).await,
        }
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        match self {
            AnyStore::Mem(s) => s.get(key, now).await,
            #[cfg(not(madsim))]
            AnyStore::File(s) => s.get(key, now).await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(s) => s.get(key, now).await,
            #[cfg(feature = "tikv")]
            AnyStore::Tikv(s) => s.get(key, now).await,
        }
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        match self {
            AnyStore::Mem(s) => s.scan(prefix, limit, now).await,
            #[cfg(not(madsim))]
            AnyStore::File(s) => s.scan(prefix, limit, now).await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(s) => s.scan(prefix, limit, now).await,
            #[cfg(feature = "tikv")]
            AnyStore::Tikv(s) => s.scan(prefix, limit, now).await,
        }
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        match self {
            AnyStore::Mem(s) => s.apply(writes, now).await,
            #[cfg(not(madsim))]
            AnyStore::File(s) => s.apply(writes, now).await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(s) => s.apply(writes, now).await,
            #[cfg(feature = "tikv")]
            AnyStore::Tikv(s) => s.apply(writes, now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// What the next `apply` of the flaky store does.
    enum Fault {
        Unavailable,
        /// The writes happen, but the answer is lost.
        AmbiguousApplied,
        /// The answer is lost and the writes did not happen.
        AmbiguousLost,
    }

    /// A neighbour for the unit under test: a memory store that misbehaves on cue.
    #[derive(Clone, Default)]
    struct Flaky {
        inner: MemStore,
        faults: Arc<Mutex<VecDeque<Fault>>>,
    }

    impl Flaky {
        fn then(&self, f: Fault) {
            self.faults.lock().unwrap().push_back(f);
        }
    }

    impl Store for Flaky {
        async fn watch(&self, p: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
            self.inner.watch(p).await
        }
        async fn get(
            &self,
            key: &str,
            now: UnixMillis,
        ) -> Result<Option<StoredRecord>, StoreError> {
            self.inner.get(key, now).await
        }
        async fn scan(
            &self,
            p: &str,
            l: usize,
            now: UnixMillis,
        ) -> Result<Vec<StoredRecord>, StoreError> {
            self.inner.scan(p, l, now).await
        }
        async fn apply(
            &self,
            writes: Vec<StoreWrite>,
            now: UnixMillis,
        ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
            let fault = self.faults.lock().unwrap().pop_front();
            let n = writes.len();
            let lost = || {
                Ok((0..n)
                    .map(|_| Err(StoreError::Ambiguous("timeout".into())))
                    .collect())
            };
            match fault {
                Some(Fault::Unavailable) => Err(StoreError::Retryable("no leader".into())),
                Some(Fault::AmbiguousApplied) => {
                    self.inner.apply(writes, now).await?;
                    lost()
                }
                Some(Fault::AmbiguousLost) => lost(),
                None => self.inner.apply(writes, now).await,
            }
        }
    }

    fn put(key: &str, version: u64, expect: Option<u64>) -> StoreWrite {
        StoreWrite::Put {
            key: key.into(),
            value: vec![1],
            version,
            expect,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn every_error_kind_is_settled() {
        let s = Flaky::default();
        let clock = || 1;
        // Unavailable, then applied with the answer lost: settled as done by reading back.
        s.then(Fault::Unavailable);
        s.then(Fault::AmbiguousApplied);
        let r = apply_resolved(&s, vec![put("k", 1, None)], clock, 5_000).await;
        assert_eq!(r, vec![Ok(())]);
        // Lost before it happened: the record is unchanged, so it is written again.
        s.then(Fault::AmbiguousLost);
        let r = apply_resolved(&s, vec![put("k", 2, Some(1))], clock, 5_000).await;
        assert_eq!(r, vec![Ok(())]);
        assert_eq!(s.get("k", 1).await.unwrap().unwrap().version, 2);
        // A conflict stays a conflict; the other write of the group still succeeds.
        let r = apply_resolved(
            &s,
            vec![put("k", 9, Some(5)), put("j", 1, None)],
            clock,
            5_000,
        )
        .await;
        assert_eq!(r, vec![Err(StoreError::Conflict), Ok(())]);
        // A store that never answers: given up after the deadline, as retryable.
        for _ in 0..100 {
            s.then(Fault::Unavailable);
        }
        let start = std::time::Instant::now();
        let wall = move || start.elapsed().as_millis() as u64;
        let r = apply_resolved(&s, vec![put("x", 1, None)], wall, 200).await;
        assert!(matches!(r[..], [Err(StoreError::Retryable(_))]), "{r:?}");
    }
}
