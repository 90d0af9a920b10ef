//! A store opened on first use, and again after it could not be: another region's store,
//! which may be out of reach when this node starts (a region serves on its own) and comes
//! within reach later.

use super::{AnyStore, Change, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct LazyStore {
    url: String,
    opened: Arc<Mutex<Option<AnyStore>>>,
}

impl LazyStore {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            opened: Arc::default(),
        }
    }

    async fn store(&self) -> Result<AnyStore, StoreError> {
        let mut opened = self.opened.lock().await;
        if let Some(s) = opened.as_ref() {
            return Ok(s.clone());
        }
        let s = AnyStore::open(&self.url).await?;
        *opened = Some(s.clone());
        Ok(s)
    }
}

impl Store for LazyStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        self.store().await?.watch(prefix).await
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        self.store().await?.get(key, now).await
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.store().await?.scan(prefix, limit, now).await
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.store().await?.apply(writes, now).await
    }
}
