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
//! - Errors are typed: [`StoreError::Conflict`] (the CAS lost), [`StoreError::Retryable`]
//!   (nothing happened, try again), [`StoreError::Ambiguous`] (it may have happened: re-read
//!   before acting), [`StoreError::Fatal`].

use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// The store interface every backend implements.
pub trait Store: Send + Sync + 'static {
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
    let live = current.filter(|r| r.expires_at.is_none_or(|e| e > now));
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

fn record_of(w: StoreWrite) -> Option<StoredRecord> {
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

/// In-memory backend (`mem:`): for tests and for running without persistence.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    map: Arc<Mutex<BTreeMap<String, StoredRecord>>>,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredRecord>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self
            .lock()
            .get(key)
            .filter(|r| r.expires_at.is_none_or(|e| e > now))
            .cloned())
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
            .filter(|r| r.expires_at.is_none_or(|e| e > now))
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

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("drongo");

/// Embedded durable backend (`file:DIR`, the default) on redb: one fsync per `apply`.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<redb::Database>,
}

fn fatal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Fatal(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(fatal)?;
        let db = redb::Database::create(dir.join("drongo.redb")).map_err(fatal)?;
        let txn = db.begin_write().map_err(fatal)?;
        txn.open_table(TABLE).map_err(fatal)?;
        txn.commit().map_err(fatal)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Stored form: version (8 bytes BE), expires_at (8 bytes BE, 0 for none), value.
    fn encode(r: &StoredRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + r.value.len());
        out.extend_from_slice(&r.version.to_be_bytes());
        out.extend_from_slice(&r.expires_at.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&r.value);
        out
    }

    fn decode(key: &str, bytes: &[u8]) -> Option<StoredRecord> {
        let version = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let expires = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(StoredRecord {
            key: key.to_string(),
            value: bytes.get(16..)?.to_vec(),
            version,
            expires_at: (expires != 0).then_some(expires),
        })
    }

    fn get_blocking(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().map_err(fatal)?;
        let table = txn.open_table(TABLE).map_err(fatal)?;
        let rec = table.get(key).map_err(fatal)?;
        Ok(rec
            .and_then(|v| Self::decode(key, v.value()))
            .filter(|r| r.expires_at.is_none_or(|e| e > now)))
    }

    fn scan_blocking(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().map_err(fatal)?;
        let table = txn.open_table(TABLE).map_err(fatal)?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(fatal)? {
            let (k, v) = item.map_err(fatal)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            if let Some(r) = Self::decode(k.value(), v.value()) {
                if r.expires_at.is_none_or(|e| e > now) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    fn apply_blocking(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        use redb::ReadableTable;
        let txn = self.db.begin_write().map_err(fatal)?;
        let mut results = Vec::with_capacity(writes.len());
        {
            let mut table = txn.open_table(TABLE).map_err(fatal)?;
            for w in writes {
                let current = table
                    .get(w.key())
                    .map_err(fatal)?
                    .and_then(|v| Self::decode(w.key(), v.value()));
                if let Err(e) = check(current.as_ref(), &w, now) {
                    results.push(Err(e));
                    continue;
                }
                let key = w.key().to_string();
                match record_of(w) {
                    Some(r) => {
                        let bytes = Self::encode(&r);
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(fatal)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(fatal)?;
                    }
                }
                results.push(Ok(()));
            }
        }
        // A failed commit may or may not have reached the disk.
        txn.commit()
            .map_err(|e| StoreError::Ambiguous(e.to_string()))?;
        Ok(results)
    }
}

impl Store for RedbStore {
    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        let (s, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || s.get_blocking(&key, now))
            .await
            .map_err(fatal)?
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let (s, prefix) = (self.clone(), prefix.to_string());
        tokio::task::spawn_blocking(move || s.scan_blocking(&prefix, limit, now))
            .await
            .map_err(fatal)?
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || s.apply_blocking(writes, now))
            .await
            .map_err(fatal)?
    }
}

/// A backend chosen by URL: `mem:` or `file:DIR`.
#[derive(Clone)]
pub enum AnyStore {
    Mem(MemStore),
    File(RedbStore),
}

impl AnyStore {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        if url == "mem:" {
            Ok(AnyStore::Mem(MemStore::default()))
        } else if let Some(dir) = url.strip_prefix("file:") {
            Ok(AnyStore::File(RedbStore::open(Path::new(dir))?))
        } else {
            Err(StoreError::Fatal(format!("unknown store URL {url}")))
        }
    }
}

impl Store for AnyStore {
    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        match self {
            AnyStore::Mem(s) => s.get(key, now).await,
            AnyStore::File(s) => s.get(key, now).await,
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
            AnyStore::File(s) => s.scan(prefix, limit, now).await,
        }
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        match self {
            AnyStore::Mem(s) => s.apply(writes, now).await,
            AnyStore::File(s) => s.apply(writes, now).await,
        }
    }
}
