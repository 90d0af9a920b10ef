//! Cluster backend on TiKV's raw API (`tikv://PD1,PD2,...`), with `tikv-client` 0.4.
//!
//! Why raw and not transactions: every write of the contract is one key, and raw atomic CAS
//! gives exactly that in one round trip. What shapes it:
//! - Raw CAS compares the whole previous value, so our version lives inside the value (the
//!   same encoding as the other backends) and a write CASes against the bytes it read.
//! - CAS cannot set a TTL and server-side TTL must be enabled when the cluster is created,
//!   so a lease is the expiry inside the value, which readers honour.
//! - Mixing atomic-mode and plain writers on the same keys breaks linearizability
//!   (tikv#10594): this client is always in atomic mode and nothing else writes these keys.
//! - A conditional delete is a CAS to a tombstone (an empty value) that readers treat as
//!   absent; a raw delete could not be conditional, and an unconditional one could erase a
//!   record created after the tombstone.

use super::redb_store::RedbStore;
use super::{apply_by_key, check, check_fence, Change, KeyWriter, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord, LEADER_TERM_KEY};
use drongo_core::UnixMillis;
use tikv_client::RawClient;

const PREFIX: &str = "drongo/";

#[derive(Clone)]
pub struct TikvStore {
    client: RawClient,
}

fn retryable(e: tikv_client::Error) -> StoreError {
    StoreError::Retryable(e.to_string())
}

fn decode_live(key: &str, bytes: &[u8], now: UnixMillis) -> Option<StoredRecord> {
    if bytes.is_empty() {
        return None; // tombstone
    }
    RedbStore::decode(key, bytes).filter(|r| r.is_live(now))
}

impl TikvStore {
    /// Connects through the placement driver endpoints, in atomic mode.
    pub async fn connect(pd: &[String]) -> Result<Self, StoreError> {
        let client = RawClient::new(pd.to_vec()).await.map_err(retryable)?;
        Ok(Self {
            client: client.with_atomic_for_cas(),
        })
    }
}

impl KeyWriter for TikvStore {
    async fn write_one(&self, w: StoreWrite, now: UnixMillis) -> Result<(), StoreError> {
        let full = format!("{PREFIX}{}", w.key());
        let raw = self.client.get(full.clone()).await.map_err(retryable)?;
        let current = raw
            .as_deref()
            .filter(|b| !b.is_empty())
            .and_then(|b| RedbStore::decode(w.key(), b));
        if w.fence().is_some() {
            // The raw API has no condition across keys: the term counter is read just
            // before the compare-and-swap, which narrows a deposed leader's window but
            // does not close it as etcd's transaction does (TiKV's transactional API
            // would; not built, since TiKV cannot run here to prove it).
            let counter_key = format!("{PREFIX}{LEADER_TERM_KEY}");
            let counter = self.client.get(counter_key).await.map_err(retryable)?;
            let counter = counter
                .as_deref()
                .and_then(|b| RedbStore::decode(LEADER_TERM_KEY, b));
            check_fence(counter.as_ref(), &w)?;
        }
        check(current.as_ref(), &w, now)?;
        let new = w
            .into_record()
            .map_or_else(Vec::new, |r| RedbStore::encode(&r));
        let (_, swapped) = self
            .client
            .compare_and_swap(full, raw, new)
            .await
            .map_err(|e| StoreError::Ambiguous(e.to_string()))?;
        if swapped {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }
}

impl Store for TikvStore {
    /// TiKV's raw API has no watch: this polls the prefix every 500 ms and reports the
    /// differences (a change undone within one period is not seen).
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        let period = std::time::Duration::from_millis(500);
        super::poll_watch(self.clone(), prefix, period, crate::runtime::now_ms).await
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        let raw = self
            .client
            .get(format!("{PREFIX}{key}"))
            .await
            .map_err(retryable)?;
        Ok(raw.and_then(|b| decode_live(key, &b, now)))
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let start = format!("{PREFIX}{prefix}").into_bytes();
        // The first key after every key with this prefix.
        let mut end = start.clone();
        end.push(0xff);
        let limit = u32::try_from(limit).unwrap_or(u32::MAX).min(10_240);
        let pairs = self
            .client
            .scan(start..end, limit)
            .await
            .map_err(retryable)?;
        Ok(pairs
            .into_iter()
            .filter_map(|kv| {
                let key: Vec<u8> = kv.0.into();
                let key = String::from_utf8(key).ok()?;
                let key = key.strip_prefix(PREFIX)?;
                decode_live(key, &kv.1, now)
            })
            .collect())
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        apply_by_key(self, writes, now).await
    }
}
