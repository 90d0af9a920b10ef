//! Settling what the contract leaves unsettled: `Retryable` is retried with backoff,
//! `Ambiguous` is read back, so callers see only success, `Conflict` or `Fatal` (or the
//! error of a store that stayed away past the deadline).

use super::{Store, StoreError};
use drongo_core::store::StoreWrite;
use drongo_core::UnixMillis;

/// Applies `writes` and settles every answer the contract allows to be unsettled, as every
/// caller must: `Retryable` is tried again with backoff (up to `deadline_ms`), `Ambiguous` is
/// settled by reading the key back (the write happened if the record now has the version we
/// wrote, or is gone for a delete; if the record is still what we expected, the write is
/// tried again). What remains is `Conflict` or `Fatal`, or the error of a store that stayed
/// unreachable until the deadline.
pub async fn apply_resolved<S: Store>(
    store: &S,
    writes: Vec<StoreWrite>,
    now: impl Fn() -> UnixMillis,
    deadline_ms: u64,
) -> Vec<Result<(), StoreError>> {
    let started = now();
    let mut results: Vec<Option<Result<(), StoreError>>> = vec![None; writes.len()];
    // Writes that were answered ambiguously once: an earlier try may have landed.
    let mut unsure = vec![false; writes.len()];
    let mut delay = 20u64;
    loop {
        let pending: Vec<usize> = (0..writes.len())
            .filter(|i| {
                !matches!(
                    results[*i],
                    Some(Ok(()))
                        | Some(Err(StoreError::Conflict))
                        | Some(Err(StoreError::Fenced))
                        | Some(Err(StoreError::Fatal(_)))
                )
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        if now().saturating_sub(started) > deadline_ms {
            break;
        }
        let batch: Vec<StoreWrite> = pending.iter().map(|i| writes[*i].clone()).collect();
        let answers = match store.apply(batch, now()).await {
            Ok(a) => a,
            Err(e) => vec![e; 1]
                .into_iter()
                .cycle()
                .take(pending.len())
                .map(Err)
                .collect(),
        };
        for (i, answer) in pending.iter().zip(answers) {
            results[*i] = Some(match answer {
                Err(StoreError::Ambiguous(e)) => {
                    unsure[*i] = true;
                    settle(store, &writes[*i], now(), e).await
                }
                // The conflict may be with our own earlier try, which landed after all
                // (store-leader-change-during-takeover seed 139: a call's write reported
                // lost to itself, and the call was forgotten with its caller's answer).
                Err(StoreError::Conflict) if unsure[*i] => {
                    settle(
                        store,
                        &writes[*i],
                        now(),
                        "conflict after a lost answer".into(),
                    )
                    .await
                }
                other => other,
            });
        }
        let retry = results.iter().any(|r| {
            matches!(
                r,
                Some(Err(StoreError::Retryable(_))) | Some(Err(StoreError::Ambiguous(_)))
            )
        });
        if !retry {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        delay = (delay * 2).min(1_000);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(StoreError::Retryable("store unreachable".into()))))
        .collect()
}

/// After an ambiguous answer: did the write happen? `Ok` if so, `Retryable` if the record is
/// unchanged (so the write may be tried again), `Conflict` if someone else changed it.
async fn settle<S: Store>(
    store: &S,
    w: &StoreWrite,
    now: UnixMillis,
    why: String,
) -> Result<(), StoreError> {
    let record = match store.get(w.key(), now).await {
        Ok(c) => c,
        Err(_) => return Err(StoreError::Ambiguous(why)),
    };
    let current = record.as_ref().map(|r| r.version);
    match w.unfenced() {
        StoreWrite::Put {
            version,
            expect,
            value,
            ..
        } => {
            // Our version with our bytes: another writer's compare-and-swap on the same
            // version makes the same number (store-leader-change-during-takeover seed 1:
            // an adopter took the owner's claim for its own).
            let ours = record
                .as_ref()
                .is_some_and(|r| r.version == *version && r.value == *value);
            if ours {
                Ok(())
            } else if current == *expect {
                Err(StoreError::Retryable(format!("not applied: {why}")))
            } else {
                Err(StoreError::Conflict)
            }
        }
        StoreWrite::Delete { expect, .. } => match current {
            None => Ok(()),
            Some(v) if v == *expect => Err(StoreError::Retryable(format!("not applied: {why}"))),
            Some(_) => Err(StoreError::Conflict),
        },
        StoreWrite::Fenced { .. } => Err(StoreError::Conflict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Change, MemStore};
    use drongo_core::store::StoredRecord;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// What the next `apply` of the flaky store does.
    enum Fault {
        Unavailable,
        /// The writes happen, but the answer is lost.
        AmbiguousApplied,
        /// The answer is lost and the writes did not happen.
        AmbiguousLost,
    }

    /// A neighbour for the unit under test: a memory store that misbehaves on cue.
    #[derive(Clone, Default)]
    struct Flaky {
        inner: MemStore,
        faults: Arc<Mutex<VecDeque<Fault>>>,
        /// How many of the next reads fail (no leader).
        failing_gets: Arc<Mutex<u32>>,
    }

    impl Flaky {
        fn then(&self, f: Fault) {
            self.faults.lock().unwrap().push_back(f);
        }
    }

    impl Store for Flaky {
        async fn watch(&self, p: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
            self.inner.watch(p).await
        }
        async fn get(
            &self,
            key: &str,
            now: UnixMillis,
        ) -> Result<Option<StoredRecord>, StoreError> {
            {
                let mut n = self.failing_gets.lock().unwrap();
                if *n > 0 {
                    *n -= 1;
                    return Err(StoreError::Retryable("no leader".into()));
                }
            }
            self.inner.get(key, now).await
        }
        async fn scan(
            &self,
            p: &str,
            l: usize,
            now: UnixMillis,
        ) -> Result<Vec<StoredRecord>, StoreError> {
            self.inner.scan(p, l, now).await
        }
        async fn apply(
            &self,
            writes: Vec<StoreWrite>,
            now: UnixMillis,
        ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
            let fault = self.faults.lock().unwrap().pop_front();
            let n = writes.len();
            let lost = || {
                Ok((0..n)
                    .map(|_| Err(StoreError::Ambiguous("timeout".into())))
                    .collect())
            };
            match fault {
                Some(Fault::Unavailable) => Err(StoreError::Retryable("no leader".into())),
                Some(Fault::AmbiguousApplied) => {
                    self.inner.apply(writes, now).await?;
                    lost()
                }
                Some(Fault::AmbiguousLost) => lost(),
                None => self.inner.apply(writes, now).await,
            }
        }
    }

    fn put(key: &str, version: u64, expect: Option<u64>) -> StoreWrite {
        put_bytes(key, version, expect, 1)
    }

    /// A put whose value is the one byte `value` (tells one writer's from another's).
    fn put_bytes(key: &str, version: u64, expect: Option<u64>, value: u8) -> StoreWrite {
        StoreWrite::Put {
            key: key.into(),
            value: vec![value],
            version,
            expect,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn every_error_kind_is_settled() {
        let s = Flaky::default();
        let clock = || 1;
        // Unavailable, then applied with the answer lost: settled as done by reading back.
        s.then(Fault::Unavailable);
        s.then(Fault::AmbiguousApplied);
        let r = apply_resolved(&s, vec![put("k", 1, None)], clock, 5_000).await;
        assert_eq!(r, vec![Ok(())]);
        // Lost before it happened: the record is unchanged, so it is written again.
        s.then(Fault::AmbiguousLost);
        let r = apply_resolved(&s, vec![put("k", 2, Some(1))], clock, 5_000).await;
        assert_eq!(r, vec![Ok(())]);
        assert_eq!(s.get("k", 1).await.unwrap().unwrap().version, 2);
        // A conflict stays a conflict; the other write of the group still succeeds.
        let r = apply_resolved(
            &s,
            vec![put("k", 9, Some(5)), put("j", 1, None)],
            clock,
            5_000,
        )
        .await;
        assert_eq!(r, vec![Err(StoreError::Conflict), Ok(())]);
        // A store that never answers: given up after the deadline, as retryable.
        for _ in 0..100 {
            s.then(Fault::Unavailable);
        }
        let start = std::time::Instant::now();
        let wall = move || start.elapsed().as_millis() as u64;
        let r = apply_resolved(&s, vec![put("x", 1, None)], wall, 200).await;
        assert!(matches!(r[..], [Err(StoreError::Retryable(_))]), "{r:?}");
    }

    /// A write that landed though its answer was lost, and whose read-back failed too: tried
    /// again, it conflicts with itself. That is our write, not a conflict
    /// (store-leader-change-during-takeover seed 139).
    #[tokio::test]
    async fn a_retry_that_conflicts_with_its_own_landed_write_is_done() {
        let s = Flaky::default();
        let clock = || 1;
        s.then(Fault::AmbiguousApplied);
        *s.failing_gets.lock().unwrap() = 1;
        let r = apply_resolved(&s, vec![put("k", 1, None)], clock, 5_000).await;
        assert_eq!(r, vec![Ok(())]);
    }

    /// A write lost before it happened while another writer's compare-and-swap on the same
    /// version went through: the record has the version we wrote, not our bytes. That is a
    /// conflict, not our write (store-leader-change-during-takeover seed 1: an adopter took
    /// the call's returning owner's claim for its own, and both ran the call).
    #[tokio::test]
    async fn another_writers_record_at_our_version_is_a_conflict() {
        let s = Flaky::default();
        let clock = || 1;
        s.inner.apply(vec![put("c", 1, None)], 1).await.unwrap();
        let theirs = put_bytes("c", 2, Some(1), 2);
        s.inner.apply(vec![theirs], 1).await.unwrap();
        s.then(Fault::AmbiguousLost);
        let ours = put_bytes("c", 2, Some(1), 3);
        let r = apply_resolved(&s, vec![ours], clock, 5_000).await;
        assert_eq!(r, vec![Err(StoreError::Conflict)]);
    }
}
