//! Watches for the backends that cannot stream changes themselves: a polling watch (TiKV,
//! the simulated store) and the fan-out of one process's own writes (embedded, in-memory).

use super::{Change, Store, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::collections::BTreeMap;

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
            record: w.clone().into_record(),
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
