//! Cluster backend on etcd v3 (`etcd://HOST:PORT,...`).
//!
//! A record is stored under `drongo/<key>` in the same form as the embedded backend (our
//! version and expiry, then the value), so readers honour the expiry exactly as everywhere
//! else. A group of writes goes as one transaction guarded by each key's `mod_revision`
//! (see `etcd_txn`): a writer that raced us makes a compare fail, and a write whose version
//! no longer matches is a lost CAS. Records with an expiry also get an etcd lease, so that
//! etcd itself removes them some time after they expired.
//!
//! Errors: a failed read is `Retryable` (nothing was written); a failed transaction is
//! `Ambiguous` (the request may have been committed before the connection broke, e.g. when
//! the leader died), and the caller must re-read.

use super::etcd_txn::{self, Known, LeasePool, PREFIX};
use super::redb_store::RedbStore;
use super::{Change, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Where our keys live: `drongo/`, or `drongo/{namespace}/` (several clusters, or
    /// tests, on one etcd).
    prefix: String,
    /// Revisions of the keys we wrote or read, to guard writes without reading first.
    known: Known,
    leases: LeasePool,
}

fn retryable(e: etcd_client::Error) -> StoreError {
    StoreError::Retryable(e.to_string())
}

impl EtcdStore {
    /// Connects to any of `endpoints` (`host:port`).
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Self::connect_in(endpoints, None).await
    }

    /// Connects, keeping every key under `namespace` (`etcd://HOST:PORT,.../NAMESPACE`):
    /// clusters with different namespaces share an etcd without seeing each other.
    pub async fn connect_in(
        endpoints: &[String],
        namespace: Option<&str>,
    ) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None).await.map_err(retryable)?;
        let prefix = match namespace.filter(|n| !n.is_empty()) {
            Some(ns) => format!("{PREFIX}{ns}/"),
            None => PREFIX.to_string(),
        };
        Ok(Self {
            client,
            prefix,
            known: Known::default(),
            leases: LeasePool::default(),
        })
    }

    /// The underlying client (the conformance suite uses it to find the leader).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Current record and its etcd mod_revision (0 when absent).
    async fn read(&self, key: &str) -> Result<Option<StoredRecord>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(format!("{}{key}", self.prefix), None)
            .await
            .map_err(retryable)?;
        let item = resp.kvs().first();
        let at = resp.header().map_or(0, |h| h.revision());
        self.known
            .saw(key, item.map(|i| (i.value(), i.mod_revision())), at);
        Ok(item.and_then(|i| RedbStore::decode(key, i.value())))
    }
}

impl Store for EtcdStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        let mut client = self.client.clone();
        let (watcher, mut stream) = client
            .watch(
                format!("{}{prefix}", self.prefix),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
            .map_err(retryable)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let ours = self.prefix.clone();
        tokio::task::spawn(async move {
            let _watcher = watcher; // dropping it cancels the watch
            loop {
                // Ends as soon as the receiver is dropped, not at the next change.
                let resp = tokio::select! {
                    _ = tx.closed() => return,
                    r = stream.message() => match r {
                        Ok(Some(resp)) => resp,
                        _ => return,
                    },
                };
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Some(key) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.strip_prefix(ours.as_str()))
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
        let rec = self.read(key).await?;
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
            .get(format!("{}{prefix}", self.prefix), Some(opts))
            .await
            .map_err(retryable)?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|item| {
                let key = std::str::from_utf8(item.key())
                    .ok()?
                    .strip_prefix(self.prefix.as_str())?;
                RedbStore::decode(key, item.value())
            })
            .filter(|r| r.is_live(now))
            .collect())
    }

    /// One transaction for the group in the common case; writes to one key keep their
    /// order.
    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let (client, known, leases) = (&self.client, &self.known, &self.leases);
        Ok(etcd_txn::apply(&self.prefix, client, known, leases, writes, now).await)
    }
}
