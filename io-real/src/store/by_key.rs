//! Group writes for backends whose writes are network calls, one key at a time (TiKV):
//! concurrent across keys, in order within a key.

use super::StoreError;
use drongo_core::store::StoreWrite;
use drongo_core::UnixMillis;
use std::collections::BTreeMap;
use std::future::Future;

/// A backend whose writes are network calls, one key at a time.
pub(crate) trait KeyWriter: Clone + Send + Sync + 'static {
    fn write_one(
        &self,
        w: StoreWrite,
        now: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Applies `writes` through `store`, concurrently across keys and in order within a key,
/// and answers each write in its place.
pub(crate) async fn apply_by_key<W: KeyWriter>(
    store: &W,
    writes: Vec<StoreWrite>,
    now: UnixMillis,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let n = writes.len();
    let mut chains: BTreeMap<String, Vec<(usize, StoreWrite)>> = BTreeMap::new();
    for (i, w) in writes.into_iter().enumerate() {
        chains.entry(w.key().to_string()).or_default().push((i, w));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, chain) in chains {
        let store = store.clone();
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(chain.len());
            for (i, w) in chain {
                out.push((i, store.write_one(w, now).await));
            }
            out
        });
    }
    let mut results: Vec<Result<(), StoreError>> = (0..n)
        .map(|_| Err(StoreError::Retryable("not run".into())))
        .collect();
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|e| StoreError::Fatal(e.to_string()))?;
        for (i, r) in done {
            if let Some(slot) = results.get_mut(i) {
                *slot = r;
            }
        }
    }
    Ok(results)
}
