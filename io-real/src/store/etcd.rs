//! Cluster backend on etcd v3 (`etcd://HOST:PORT,...`).
//!
//! A record is stored under `drongo/<key>` in the same form as the embedded backend (our
//! version and expiry, then the value), so readers honour the expiry exactly as everywhere
//! else. A write reads the key, checks our version against it, then commits with a
//! transaction that compares the key's `mod_revision` with the one it read: a writer that
//! raced us makes the compare fail, which is a lost CAS. Records with an expiry also get an
//! etcd lease, so that etcd itself removes them some time after they expired.
//!
//! Errors: a failed read is `Retryable` (nothing was written); a failed transaction is
//! `Ambiguous` (the request may have been committed before the connection broke, e.g. when
//! the leader died), and the caller must re-read.

use super::redb_store::RedbStore;
use super::{apply_by_key, check, Change, KeyWriter, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

const PREFIX: &str = "drongo/";

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

fn retryable(e: etcd_client::Error) -> StoreError {
    StoreError::Retryable(e.to_string())
}

fn ambiguous(e: etcd_client::Error) -> StoreError {
    StoreError::Ambiguous(e.to_string())
}

impl EtcdStore {
    /// Connects to any of `endpoints` (`host:port`).
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None).await.map_err(retryable)?;
        Ok(Self { client })
    }

    /// The underlying client (the conformance suite uses it to find the leader).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Current record and its etcd mod_revision (0 when absent).
    async fn read(&self, key: &str) -> Result<(Option<StoredRecord>, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(format!("{PREFIX}{key}"), None)
            .await
            .map_err(retryable)?;
        Ok(match resp.kvs().first() {
            Some(item) => (RedbStore::decode(key, item.value()), item.mod_revision()),
            None => (None, 0),
        })
    }
}

impl KeyWriter for EtcdStore {
    async fn write_one(&self, w: StoreWrite, now: UnixMillis) -> Result<(), StoreError> {
        let (current, revision) = self.read(w.key()).await?;
        check(current.as_ref(), &w, now)?;
        let full = format!("{PREFIX}{}", w.key());
        let guard = if revision == 0 {
            Compare::create_revision(full.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(full.clone(), CompareOp::Equal, revision)
        };
        let op = match w.into_record() {
            Some(r) => {
                let mut opts = PutOptions::new();
                if let Some(exp) = r.expires_at {
                    // etcd drops the key a second after our expiry; readers stop seeing it
                    // at the expiry itself.
                    let ttl = (exp.saturating_sub(now) / 1000 + 2) as i64;
                    let lease = self
                        .client
                        .lease_client()
                        .grant(ttl, None)
                        .await
                        .map_err(retryable)?;
                    opts = opts.with_lease(lease.id());
                }
                TxnOp::put(full, RedbStore::encode(&r), Some(opts))
            }
            None => TxnOp::delete(full, None),
        };
        let mut kv = self.client.kv_client();
        let resp = kv
            .txn(Txn::new().when(vec![guard]).and_then(vec![op]))
            .await
            .map_err(ambiguous)?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }
}

impl Store for EtcdStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        let mut client = self.client.clone();
        let (watcher, mut stream) = client
            .watch(
                format!("{PREFIX}{prefix}"),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
            .map_err(retryable)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        tokio::task::spawn(async move {
            let _watcher = watcher; // dropping it would cancel the watch
            while let Ok(Some(resp)) = stream.message().await {
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Some(key) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.strip_prefix(PREFIX))
                    else {
                        continue;
                    };
                    let record = match ev.event_type() {
                        EventType::Put => RedbStore::decode(key, kv.value()),
                        EventType::Delete => None,
                    };
                    let change = Change {
                        key: key.to_string(),
                        record,
                    };
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        let (rec, _) = self.read(key).await?;
        Ok(rec.filter(|r| r.is_live(now)))
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let mut kv = self.client.kv_client();
        let mut opts = GetOptions::new().with_prefix();
        if limit < i64::MAX as usize {
            opts = opts.with_limit(limit as i64);
        }
        let resp = kv
            .get(format!("{PREFIX}{prefix}"), Some(opts))
            .await
            .map_err(retryable)?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|item| {
                let key = std::str::from_utf8(item.key()).ok()?.strip_prefix(PREFIX)?;
                RedbStore::decode(key, item.value())
            })
            .filter(|r| r.is_live(now))
            .collect())
    }

    /// Writes to different keys go concurrently; writes to one key keep their order.
    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        apply_by_key(self, writes, now).await
    }
}
