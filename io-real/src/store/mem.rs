//! The in-memory backend.

use super::watch::LocalChanges;
use super::{check, check_fence, Change, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord, LEADER_TERM_KEY};
use drongo_core::UnixMillis;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
                check_fence(map.get(LEADER_TERM_KEY), &w)?;
                check(map.get(w.key()), &w, now)?;
                self.changes.publish(&w);
                let key = w.key().to_string();
                match w.into_record() {
                    Some(r) => map.insert(key, r),
                    None => map.remove(&key),
                };
                Ok(())
            })
            .collect())
    }
}
