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
//! - A [`StoreWrite::Fenced`] write (a leader's chore) also needs the leaders' term counter
//!   (`leader-term`, whose version is the term) to be at its term, checked in the same
//!   atomic step as its own compare-and-swap; otherwise it is refused with
//!   [`StoreError::Fenced`]: a deposed leader's late write never lands.
//! - Errors are typed: [`StoreError::Conflict`] (the CAS lost), [`StoreError::Retryable`]
//!   (nothing happened, try again), [`StoreError::Ambiguous`] (it may have happened: re-read
//!   before acting), [`StoreError::Fatal`].

use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::future::Future;

mod any;
#[cfg(feature = "tikv")]
mod by_key;
pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_txn;
mod lazy;
pub mod linearizability;
mod mem;
// The embedded store does blocking file I/O, which a simulation cannot run; the simulated
// node uses io-sim's store instead.
#[cfg(not(madsim))]
mod redb_store;
mod settle;
#[cfg(feature = "tikv")]
mod tikv;
mod watch;

pub use any::AnyStore;
#[cfg(feature = "tikv")]
pub(crate) use by_key::{apply_by_key, KeyWriter};
pub use lazy::LazyStore;
pub use mem::MemStore;
pub use settle::apply_resolved;
pub use watch::poll_watch;
#[cfg(not(madsim))]
pub(crate) use watch::LocalChanges;

#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;
#[cfg(not(madsim))]
pub use redb_store::RedbStore;
#[cfg(feature = "tikv")]
pub use tikv::TikvStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    Conflict,
    /// A fenced write's term is not the leaders' term any more: nothing was written.
    Fenced,
    Retryable(String),
    Ambiguous(String),
    Fatal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict => write!(f, "conflict"),
            StoreError::Fenced => write!(f, "fenced: a later leader took office"),
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
    let ok = match w.unfenced() {
        StoreWrite::Put { expect, .. } => version == *expect,
        StoreWrite::Delete { expect, .. } => version == Some(*expect),
        StoreWrite::Fenced { .. } => false,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// Checks a fenced write's term against the leaders' term counter as the store holds it
/// (`counter`: the record at `leader-term`, whose version is the current term). A write
/// that is not fenced passes.
fn check_fence(counter: Option<&StoredRecord>, w: &StoreWrite) -> Result<(), StoreError> {
    match w.fence() {
        Some(term) if counter.map(|r| r.version) != Some(term) => Err(StoreError::Fenced),
        _ => Ok(()),
    }
}
