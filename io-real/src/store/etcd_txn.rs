//! A group of writes as few etcd transactions as possible: one round trip for a batch in
//! the common case, instead of a read and a transaction for every write.
//!
//! Our compare-and-swap is on the version inside our value, which etcd cannot compare
//! without the whole value. So the backend remembers, for every key it has written or
//! read, etcd's `mod_revision` of it and our version and expiry at that revision
//! ([`Known`]). A write whose expectation holds against what is remembered is guarded by
//! `mod_revision == remembered` (`create_revision == 0` for a key known or assumed absent):
//! if etcd agrees, the record is exactly the one we checked against. The transaction's
//! failure branch reads every key back, so a failed compare costs no extra round trip: the
//! writes whose expectation is false against the fresh records are answered `Conflict`,
//! and the rest go again. A key we know nothing of (and whose write expects a version) is
//! read first, all such keys in one transaction.
//!
//! etcd refuses a transaction that puts one key twice, and bounds a transaction's
//! operations (`--max-txn-ops`, 128 by default) and size (1.5 MiB): writes to one key go in
//! successive rounds (their order kept), and a round is cut into chunks under both limits.

use super::redb_store::RedbStore;
use super::{check, check_fence, StoreError};
use drongo_core::store::{StoreWrite, StoredRecord, LEADER_TERM_KEY};
use drongo_core::UnixMillis;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Where our keys live in etcd when the URL names no namespace.
pub(super) const PREFIX: &str = "drongo/";

/// etcd's default `--max-txn-ops`.
const MAX_OPS: usize = 128;
/// Well under etcd's default request limit (1.5 MiB).
const MAX_BYTES: usize = 1 << 20;
/// Attempts at a chunk whose compares keep failing (other writers racing us).
const ATTEMPTS: usize = 4;
/// Leases are shared by records expiring in the same window of this many milliseconds.
const LEASE_WINDOW_MS: u64 = 5_000;
/// The most keys remembered; past it the memory starts again (a miss costs one read).
const MAX_KNOWN: usize = 200_000;

/// What we last saw of a key: etcd's mod_revision (0: absent) and our record's version and
/// expiry at that revision, as of store revision `at` (the response's header revision).
#[derive(Clone)]
struct Seen {
    at: i64,
    revision: i64,
    record: Option<StoredRecord>,
}

/// Keys' last seen revisions, shared by every clone of the store.
#[derive(Clone, Default)]
pub(super) struct Known(Arc<Mutex<HashMap<String, Seen>>>);

impl Known {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Option<Seen> {
        self.lock().get(key).cloned()
    }

    /// Remembers `seen` unless something newer is remembered already: clones of the store
    /// answer concurrently, and an older answer arriving late must not replace a newer one
    /// (a write judged against it could be answered `Conflict` though its expectation held
    /// all along).
    fn set(&self, key: &str, seen: Seen) {
        let mut m = self.lock();
        if m.get(key).is_some_and(|old| old.at > seen.at) {
            return;
        }
        if m.len() >= MAX_KNOWN && !m.contains_key(key) {
            m.clear();
        }
        m.insert(key.to_string(), seen);
    }

    fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Remembers a key as read from etcd at store revision `at` (`None`: absent).
    pub(super) fn saw(&self, key: &str, kv: Option<(&[u8], i64)>, at: i64) {
        self.set(key, observed(key, kv, at));
    }
}

/// What a read of `key` at store revision `at` found.
fn observed(key: &str, kv: Option<(&[u8], i64)>, at: i64) -> Seen {
    match kv {
        Some((value, revision)) => Seen {
            at,
            revision,
            record: RedbStore::decode(key, value).map(|mut r| {
                r.value = Vec::new();
                r
            }),
        },
        None => Seen {
            at,
            revision: 0,
            record: None,
        },
    }
}

/// etcd leases for records with an expiry, shared within a window of expiries so that a
/// batch does not grant one lease per record. A record's lease ends 1–6 s after its expiry
/// (readers stop seeing it at the expiry itself; the lease only lets etcd clean up).
#[derive(Clone, Default)]
pub(super) struct LeasePool(Arc<Mutex<BTreeMap<u64, i64>>>);

impl LeasePool {
    async fn lease_for(
        &self,
        client: &Client,
        expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<i64, StoreError> {
        let window = (expires_at + 1_000).div_ceil(LEASE_WINDOW_MS);
        {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // Windows already over are of no use to anyone.
            let current = now / LEASE_WINDOW_MS;
            m.retain(|w, _| *w > current);
            if let Some(id) = m.get(&window) {
                return Ok(*id);
            }
        }
        let end = window * LEASE_WINDOW_MS;
        let ttl = (end.saturating_sub(now) / 1000 + 1) as i64;
        let lease = client
            .lease_client()
            .grant(ttl, None)
            .await
            .map_err(|e| StoreError::Retryable(e.to_string()))?;
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(*m.entry(window).or_insert(lease.id()))
    }
}

/// Applies `writes` in order per key; one answer per write, in place.
pub(super) async fn apply(
    prefix: &str,
    client: &Client,
    known: &Known,
    leases: &LeasePool,
    writes: Vec<StoreWrite>,
    now: UnixMillis,
) -> Vec<Result<(), StoreError>> {
    let mut results: Vec<Result<(), StoreError>> = (0..writes.len())
        .map(|_| Err(StoreError::Retryable("not run".into())))
        .collect();
    // Round k holds the k-th write of every key.
    let mut rounds: Vec<Vec<(usize, StoreWrite)>> = Vec::new();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for (i, w) in writes.into_iter().enumerate() {
        let k = per_key.entry(w.key().to_string()).or_default();
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        if let Some(r) = rounds.get_mut(*k) {
            r.push((i, w));
        }
        *k += 1;
    }
    for round in rounds {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (i, w) in round {
            let size = w.key().len() + prefix.len() + value_len(&w) + 32;
            if !chunk.is_empty() && (chunk.len() == MAX_OPS || bytes + size > MAX_BYTES) {
                let full = std::mem::take(&mut chunk);
                apply_chunk(prefix, client, known, leases, full, now, &mut results).await;
                bytes = 0;
            }
            bytes += size;
            chunk.push((i, w));
        }
        if !chunk.is_empty() {
            apply_chunk(prefix, client, known, leases, chunk, now, &mut results).await;
        }
    }
    results
}

fn value_len(w: &StoreWrite) -> usize {
    match w.unfenced() {
        StoreWrite::Put { value, .. } => value.len() + 16,
        StoreWrite::Delete { .. } | StoreWrite::Fenced { .. } => 0,
    }
}

fn full(prefix: &str, key: &str) -> String {
    format!("{prefix}{key}")
}

fn answer(results: &mut [Result<(), StoreError>], i: usize, r: Result<(), StoreError>) {
    if let Some(slot) = results.get_mut(i) {
        *slot = r;
    }
}

/// Reads `keys` in one transaction; remembers what it found, and returns it.
async fn read_keys(
    prefix: &str,
    client: &Client,
    known: &Known,
    keys: &[String],
) -> Result<Vec<(String, Seen)>, StoreError> {
    let ops: Vec<TxnOp> = keys
        .iter()
        .map(|k| TxnOp::get(full(prefix, k), None))
        .collect();
    let resp = client
        .kv_client()
        .txn(Txn::new().and_then(ops))
        .await
        .map_err(|e| StoreError::Retryable(e.to_string()))?;
    let at = resp.header().map_or(0, |h| h.revision());
    Ok(remember_reads(known, keys, &resp.op_responses(), at))
}

fn remember_reads(
    known: &Known,
    keys: &[String],
    responses: &[TxnOpResponse],
    at: i64,
) -> Vec<(String, Seen)> {
    let mut out = Vec::new();
    for (key, r) in keys.iter().zip(responses) {
        if let TxnOpResponse::Get(g) = r {
            let kv = g.kvs().first().map(|kv| (kv.value(), kv.mod_revision()));
            let seen = observed(key, kv, at);
            known.set(key, seen.clone());
            out.push((key.clone(), seen));
        }
    }
    out
}

/// One chunk (distinct keys, within etcd's limits): guarded puts and deletes in one
/// transaction, the failure branch reading every key back; again, up to `ATTEMPTS` times,
/// for the writes whose expectation still holds.
async fn apply_chunk(
    prefix: &str,
    client: &Client,
    known: &Known,
    leases: &LeasePool,
    chunk: Vec<(usize, StoreWrite)>,
    now: UnixMillis,
    results: &mut [Result<(), StoreError>],
) {
    let mut pending = chunk;
    // What reads during this chunk found: a failed expectation against one of these is a
    // real conflict (it held, or not, within this call), never a stale memory's verdict.
    let mut fresh: HashMap<String, Seen> = HashMap::new();
    for _ in 0..ATTEMPTS {
        // What each write is judged and guarded against, taken once (the shared memory
        // changes under us): a fresh read, or a guess from memory that its expectation
        // holds (etcd's compare then decides), or nothing yet: those keys are read first.
        let mut basis: HashMap<String, Option<Seen>> = HashMap::new();
        let mut unknown: Vec<String> = Vec::new();
        for (_, w) in &pending {
            let key = w.key();
            if let Some(seen) = fresh.get(key) {
                basis.insert(key.to_string(), Some(seen.clone()));
                continue;
            }
            let guess = known.get(key);
            let guessable = match &guess {
                Some(seen) => check(seen.record.as_ref(), w, now).is_ok(),
                None => matches!(w.unfenced(), StoreWrite::Put { expect: None, .. }),
            };
            if guessable {
                basis.insert(key.to_string(), guess);
            } else {
                unknown.push(key.to_string());
            }
        }
        // Fenced writes are judged and guarded against the term counter too, on the same
        // terms: a remembered counter that passes them, else a fresh read.
        let fenced = pending.iter().any(|(_, w)| w.fence().is_some());
        if fenced
            && !basis.contains_key(LEADER_TERM_KEY)
            && !unknown.iter().any(|k| k == LEADER_TERM_KEY)
        {
            match fresh.get(LEADER_TERM_KEY) {
                Some(seen) => {
                    basis.insert(LEADER_TERM_KEY.to_string(), Some(seen.clone()));
                }
                None => {
                    let guess = known.get(LEADER_TERM_KEY);
                    let counter = guess.as_ref().and_then(|s| s.record.as_ref());
                    let passes = pending.iter().all(|(_, w)| check_fence(counter, w).is_ok());
                    if passes && guess.is_some() {
                        basis.insert(LEADER_TERM_KEY.to_string(), guess);
                    } else {
                        unknown.push(LEADER_TERM_KEY.to_string());
                    }
                }
            }
        }
        if !unknown.is_empty() {
            match read_keys(prefix, client, known, &unknown).await {
                Ok(read) => {
                    for (k, seen) in read {
                        basis.insert(k.clone(), Some(seen.clone()));
                        fresh.insert(k, seen);
                    }
                }
                Err(e) => {
                    for (i, _) in &pending {
                        answer(results, *i, Err(e.clone()));
                    }
                    return;
                }
            }
        }
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut batch = Vec::new();
        let counter = basis.get(LEADER_TERM_KEY).cloned().flatten();
        let mut fence_guard = None;
        for (i, w) in std::mem::take(&mut pending) {
            let seen = basis.get(w.key()).cloned().flatten();
            let record = seen.as_ref().and_then(|s| s.record.as_ref());
            let term_record = counter.as_ref().and_then(|s| s.record.as_ref());
            let verdict = check_fence(term_record, &w).and(check(record, &w, now));
            if let Err(e) = verdict {
                // A guess passed by construction: this is a fresh read's verdict.
                answer(results, i, Err(e));
                continue;
            }
            if w.fence().is_some() {
                fence_guard = counter.as_ref().map(|s| s.revision);
            }
            let key = full(prefix, w.key());
            compares.push(match seen.as_ref().map_or(0, |s| s.revision) {
                0 => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                rev => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
            });
            let op = match w.unfenced() {
                StoreWrite::Put {
                    key: k,
                    value,
                    version,
                    expires_at,
                    ..
                } => {
                    let mut opts = None;
                    if let Some(exp) = expires_at {
                        match leases.lease_for(client, *exp, now).await {
                            Ok(id) => opts = Some(PutOptions::new().with_lease(id)),
                            Err(e) => {
                                compares.pop();
                                answer(results, i, Err(e));
                                continue;
                            }
                        }
                    }
                    let r = StoredRecord {
                        key: k.clone(),
                        value: value.clone(),
                        version: *version,
                        expires_at: *expires_at,
                    };
                    TxnOp::put(key, RedbStore::encode(&r), opts)
                }
                StoreWrite::Delete { .. } => TxnOp::delete(key, None),
                StoreWrite::Fenced { .. } => {
                    compares.pop();
                    answer(
                        results,
                        i,
                        Err(StoreError::Fatal("a fence within a fence".into())),
                    );
                    continue;
                }
            };
            ops.push(op);
            batch.push((i, w));
        }
        if batch.is_empty() {
            return;
        }
        let mut keys: Vec<String> = batch.iter().map(|(_, w)| w.key().to_string()).collect();
        if let Some(revision) = fence_guard {
            // The counter is where the fenced writes were judged against; the failure
            // branch reads it back with the written keys.
            let counter_key = full(prefix, LEADER_TERM_KEY);
            compares.push(Compare::mod_revision(
                counter_key,
                CompareOp::Equal,
                revision,
            ));
            keys.push(LEADER_TERM_KEY.to_string());
        }
        let reads: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::get(full(prefix, k), None))
            .collect();
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let resp = match client.kv_client().txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                // It may have been committed before the connection broke.
                for (i, w) in &batch {
                    known.forget(w.key());
                    answer(results, *i, Err(StoreError::Ambiguous(e.to_string())));
                }
                return;
            }
        };
        if resp.succeeded() {
            // Every put of one transaction has the transaction's revision.
            let revision = resp.header().map_or(0, |h| h.revision());
            for (i, w) in batch {
                let key = w.key().to_string();
                match w.into_record() {
                    Some(mut r) if revision > 0 => {
                        r.value = Vec::new();
                        let record = Some(r);
                        known.set(
                            &key,
                            Seen {
                                at: revision,
                                revision,
                                record,
                            },
                        );
                    }
                    Some(_) => known.forget(&key),
                    None => known.set(
                        &key,
                        Seen {
                            at: revision,
                            revision: 0,
                            record: None,
                        },
                    ),
                }
                answer(results, i, Ok(()));
            }
            return;
        }
        // Some compare failed: the failure branch read every key back.
        let at = resp.header().map_or(0, |h| h.revision());
        fresh.extend(remember_reads(known, &keys, &resp.op_responses(), at));
        pending = batch;
    }
    for (i, _) in pending {
        answer(
            results,
            i,
            Err(StoreError::Retryable(
                "the key kept changing under concurrent writers".into(),
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64) -> StoredRecord {
        StoredRecord {
            key: "k".into(),
            value: Vec::new(),
            version,
            expires_at: None,
        }
    }

    /// A late answer (an older store revision) never replaces a newer one: otherwise a
    /// write could be judged against a record older than one this process already saw.
    #[test]
    fn memory_never_goes_back_in_time() {
        let k = Known::default();
        let seen = |at, v| Seen {
            at,
            revision: at,
            record: Some(record(v)),
        };
        k.set("k", seen(10, 2));
        k.set("k", seen(7, 1));
        assert_eq!(k.get("k").map(|s| (s.at, s.revision)), Some((10, 10)));
        k.saw("k", None, 12);
        assert!(k
            .get("k")
            .is_some_and(|s| s.record.is_none() && s.revision == 0));
        k.set("k", seen(11, 3));
        assert!(
            k.get("k").is_some_and(|s| s.record.is_none()),
            "deleted at 12"
        );
    }
}
