//! Embedded durable backend (`file:DIR`, the default) on redb.

use super::{check, check_fence, Change, LocalChanges, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord, LEADER_TERM_KEY};
use drongo_core::UnixMillis;
use std::path::Path;
use std::sync::Arc;

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("drongo");

/// Embedded durable backend (`file:DIR`, the default) on redb: one fsync per `apply`.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<redb::Database>,
    changes: LocalChanges,
}

pub(crate) fn fatal(e: impl std::fmt::Display) -> StoreError {
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
        Ok(Self {
            db: Arc::new(db),
            changes: LocalChanges::default(),
        })
    }

    /// Stored form (shared with the etcd backend): version (8 bytes BE), expires_at (8 bytes BE, 0 for none), value.
    pub(crate) fn encode(r: &StoredRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + r.value.len());
        out.extend_from_slice(&r.version.to_be_bytes());
        out.extend_from_slice(&r.expires_at.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&r.value);
        out
    }

    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Option<StoredRecord> {
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
            .filter(|r| r.is_live(now)))
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
                if r.is_live(now) {
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
        let mut applied = Vec::new();
        {
            let mut table = txn.open_table(TABLE).map_err(fatal)?;
            for w in writes {
                let current = table
                    .get(w.key())
                    .map_err(fatal)?
                    .and_then(|v| Self::decode(w.key(), v.value()));
                let counter = match w.fence() {
                    Some(_) => table
                        .get(LEADER_TERM_KEY)
                        .map_err(fatal)?
                        .and_then(|v| Self::decode(LEADER_TERM_KEY, v.value())),
                    None => None,
                };
                let checked =
                    check_fence(counter.as_ref(), &w).and(check(current.as_ref(), &w, now));
                if let Err(e) = checked {
                    results.push(Err(e));
                    continue;
                }
                let key = w.key().to_string();
                applied.push(w.clone());
                match w.into_record() {
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
        for w in &applied {
            self.changes.publish(w);
        }
        Ok(results)
    }
}

impl Store for RedbStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        Ok(self.changes.watch(prefix))
    }

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
