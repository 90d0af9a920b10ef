//! The backend a URL names, behind one type.

#[cfg(feature = "etcd")]
use super::EtcdStore;
#[cfg(not(madsim))]
use super::RedbStore;
#[cfg(feature = "tikv")]
use super::TikvStore;
use super::{Change, MemStore, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::path::Path;

/// A backend chosen by URL: `mem:`, `file:DIR`, `etcd://HOST:PORT,...[/NAMESPACE]` (feature
/// `etcd`) or
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
                // `etcd://HOST:PORT,.../NAMESPACE`: a namespace keeps clusters apart.
                let (endpoints, namespace) = match endpoints.split_once('/') {
                    Some((eps, ns)) => (eps, Some(ns)),
                    None => (endpoints, None),
                };
                let eps: Vec<String> = endpoints.split(',').map(str::to_string).collect();
                let store = EtcdStore::connect_in(&eps, namespace).await?;
                Ok(AnyStore::Etcd(Box::new(store)))
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
