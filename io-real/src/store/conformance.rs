//! The store contract as a test suite, run against every backend: each operation's
//! semantics, TTL, CAS races, prefix scans with many keys, large values and watches. The
//! conformance tests (`io-real/tests/store_conformance.rs`) run it against the real backends
//! and the simulation (`io-sim`) against its simulated store server. It panics on the first
//! broken promise, as a test does.

use super::{Store, StoreError};
use drongo_core::store::{StoreWrite, LEADER_TERM_KEY};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const NOW: u64 = 1_700_000_000_000;

/// A key namespace no other test (or earlier run against a shared server) uses.
pub fn ns(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("conf-{run}-{}-{test}/", N.fetch_add(1, Ordering::Relaxed))
}

pub fn put(key: &str, value: &[u8], version: u64, expect: Option<u64>) -> StoreWrite {
    StoreWrite::Put {
        key: key.to_string(),
        value: value.to_vec(),
        version,
        expect,
        expires_at: None,
    }
}

pub fn del(key: &str, expect: u64) -> StoreWrite {
    StoreWrite::Delete {
        key: key.to_string(),
        expect,
    }
}

pub async fn one<S: Store>(s: &S, w: StoreWrite) -> Result<(), StoreError> {
    let mut r = s.apply(vec![w], NOW).await.expect("apply");
    r.pop().expect("one result")
}

pub async fn semantics<S: Store>(s: &S) {
    let p = ns("semantics");
    let k = format!("{p}k");
    assert_eq!(s.get(&k, NOW).await.unwrap(), None);
    one(s, put(&k, b"v1", 1, None)).await.unwrap();
    assert_eq!(
        one(s, put(&k, b"again", 1, None)).await,
        Err(StoreError::Conflict)
    );
    let got = s.get(&k, NOW).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"v1"[..], 1));
    assert_eq!(
        one(s, put(&k, b"x", 3, Some(2))).await,
        Err(StoreError::Conflict)
    );
    one(s, put(&k, b"v2", 2, Some(1))).await.unwrap();
    assert_eq!(one(s, del(&k, 1)).await, Err(StoreError::Conflict));
    assert_eq!(s.get(&k, NOW).await.unwrap().unwrap().value, b"v2");
    one(s, del(&k, 2)).await.unwrap();
    assert_eq!(s.get(&k, NOW).await.unwrap(), None);
    assert_eq!(one(s, del(&k, 2)).await, Err(StoreError::Conflict));
    // A batch answers each write on its own, in order; writes to one key chain.
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let r = s
        .apply(
            vec![
                put(&a, b"1", 1, None),
                put(&b, b"1", 1, Some(7)),
                put(&a, b"2", 2, Some(1)),
                put(&b, b"1", 1, None),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![Ok(()), Err(StoreError::Conflict), Ok(()), Ok(())]);
    assert_eq!(s.get(&a, NOW).await.unwrap().unwrap().version, 2);
}

pub async fn ttl<S: Store>(s: &S) {
    let p = ns("ttl");
    let k = format!("{p}lease");
    let w = StoreWrite::Put {
        key: k.clone(),
        value: b"held".to_vec(),
        version: 1,
        expect: None,
        expires_at: Some(NOW + 1_000),
    };
    one(s, w).await.unwrap();
    assert!(s.get(&k, NOW + 999).await.unwrap().is_some());
    assert_eq!(
        s.get(&k, NOW + 1_000).await.unwrap(),
        None,
        "expired at its time"
    );
    assert!(s.scan(&p, 10, NOW + 1_000).await.unwrap().is_empty());
    // An expired record counts as absent for CAS too: it can be created anew.
    let r = s
        .apply(vec![put(&k, b"new", 1, None)], NOW + 1_001)
        .await
        .unwrap();
    assert_eq!(r, vec![Ok(())]);
    assert_eq!(s.get(&k, NOW + 5_000).await.unwrap().unwrap().value, b"new");
}

pub async fn scans<S: Store>(s: &S) {
    let p = ns("scan");
    let n = 1_200;
    let writes: Vec<StoreWrite> = (0..n)
        .map(|i| put(&format!("{p}in/{i:05}"), format!("{i}").as_bytes(), 1, None))
        .chain((0..10).map(|i| put(&format!("{p}other/{i}"), b"x", 1, None)))
        .collect();
    for chunk in writes.chunks(100) {
        let r = s.apply(chunk.to_vec(), NOW).await.unwrap();
        assert!(r.iter().all(|x| x.is_ok()));
    }
    let all = s.scan(&format!("{p}in/"), usize::MAX, NOW).await.unwrap();
    assert_eq!(all.len(), n);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "key order");
    assert_eq!(all[17].value, b"17");
    let first: Vec<String> = s
        .scan(&format!("{p}in/"), 10, NOW)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0], format!("{p}in/00000"));
    assert_eq!(
        s.scan(&format!("{p}other/"), 100, NOW).await.unwrap().len(),
        10
    );
}

pub async fn large_values<S: Store>(s: &S) {
    let p = ns("large");
    let k = format!("{p}big");
    let value: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    one(s, put(&k, &value, 1, None)).await.unwrap();
    assert_eq!(s.get(&k, NOW).await.unwrap().unwrap().value, value);
}

/// Concurrent clients race to CAS one key from each version to the next: every version is
/// won by exactly one of them.
pub async fn cas_race<S: Store + Clone>(s: &S) {
    let p = ns("race");
    let k = Arc::new(format!("{p}counter"));
    one(s, put(&k, b"0", 1, None)).await.unwrap();
    let mut tasks = Vec::new();
    for c in 0..6u8 {
        let (s, k) = (s.clone(), k.clone());
        tasks.push(tokio::task::spawn(async move {
            let mut won = Vec::new();
            for _ in 0..20 {
                let cur = s.get(&k, NOW).await.unwrap().unwrap().version;
                if one(&s, put(&k, &[c], cur + 1, Some(cur))).await.is_ok() {
                    won.push(cur + 1);
                }
            }
            won
        }));
    }
    let mut won: Vec<u64> = Vec::new();
    for t in tasks {
        won.extend(t.await.unwrap());
    }
    won.sort_unstable();
    let last = s.get(&k, NOW).await.unwrap().unwrap().version;
    assert_eq!(
        won,
        (2..=last).collect::<Vec<_>>(),
        "each version has exactly one winner"
    );
}

/// Changes under a watched prefix are reported, and nothing outside it. `exact`: every
/// change in order (backends with a real watch); otherwise only the final state of each key
/// (a polling watch may merge changes).
pub async fn watch<S: Store>(s: &S, exact: bool) {
    let p = ns("watch");
    let mut rx = s.watch(&p).await.unwrap();
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    one(s, put(&a, b"1", 1, None)).await.unwrap();
    one(s, put(&format!("{}elsewhere", ns("x")), b"1", 1, None))
        .await
        .unwrap();
    one(s, put(&b, b"1", 1, None)).await.unwrap();
    one(s, del(&a, 1)).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(c)) => seen.push((c.key, c.record.map(|r| r.version))),
            _ => break,
        }
    }
    if exact {
        assert_eq!(seen, vec![(a.clone(), Some(1)), (b, Some(1)), (a, None)]);
    } else {
        assert!(seen.contains(&(b, Some(1))), "{seen:?}");
        assert!(seen.iter().all(|(k, _)| k.starts_with(&p)));
    }
}

/// The whole suite. `exact_watch`: the backend reports every change in order.
/// Two handles on one store, each with its own memory of what it wrote (the etcd backend
/// guards writes with the revisions it remembers): whatever one remembers, a write is
/// judged against the record as it is now. Then big groups: more writes than one etcd
/// transaction may hold, and chains of writes to one key inside a group.
pub async fn two_handles<S: Store>(a: &S, b: &S) {
    let p = ns("handles");
    let k = format!("{p}k");
    one(a, put(&k, b"a1", 1, None)).await.unwrap();
    one(b, put(&k, b"b2", 2, Some(1))).await.unwrap();
    assert_eq!(
        one(a, put(&k, b"a3", 3, Some(1))).await,
        Err(StoreError::Conflict),
        "a stale memory is not a licence"
    );
    one(a, put(&k, b"a3", 3, Some(2))).await.unwrap();
    one(b, del(&k, 3)).await.unwrap();
    assert_eq!(
        one(a, del(&k, 3)).await,
        Err(StoreError::Conflict),
        "deleted by the other handle"
    );
    one(a, put(&k, b"a1", 1, None)).await.unwrap();
    assert_eq!(b.get(&k, NOW).await.unwrap().unwrap().value, b"a1");
    assert_eq!(
        one(b, put(&k, b"b1", 1, None)).await,
        Err(StoreError::Conflict),
        "created by the other handle"
    );
    // 300 writes in one group: 297 new keys and a chain of three on one key.
    let c = format!("{p}chain");
    let mut writes: Vec<StoreWrite> = (0..297)
        .map(|i| put(&format!("{p}many/{i:03}"), b"x", 1, None))
        .collect();
    writes.insert(10, put(&c, b"1", 1, None));
    writes.insert(150, put(&c, b"2", 2, Some(1)));
    writes.insert(290, del(&c, 2));
    let r = a.apply(writes, NOW).await.unwrap();
    assert_eq!(r.len(), 300);
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    assert_eq!(b.get(&c, NOW).await.unwrap(), None);
    let many = b.scan(&format!("{p}many/"), usize::MAX, NOW).await.unwrap();
    assert_eq!(many.len(), 297);
    // One group from each handle over the same keys: every write answered on its own.
    let r = b
        .apply(
            (0..297)
                .map(|i| put(&format!("{p}many/{i:03}"), b"y", 2, Some(1 + i % 2)))
                .collect(),
            NOW,
        )
        .await
        .unwrap();
    for (i, x) in r.iter().enumerate() {
        let want = if i % 2 == 0 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        };
        assert_eq!(*x, want, "write {i}");
    }
    let got = a.get(&format!("{p}many/004"), NOW).await.unwrap().unwrap();
    assert_eq!((got.version, got.value.as_slice()), (2, &b"y"[..]));
}

/// Fenced writes (a leader's chores): written while the term counter is at their term,
/// refused (`Fenced`, nothing written) once another handle moved it, whatever record they
/// touch; their own compare-and-swap still holds. `a` writes, `b` moves the counter, so
/// that a backend that remembers what it read (etcd) is caught out by a change it did not
/// make.
pub async fn fencing<S: Store>(a: &S, b: &S) {
    let p = ns("fencing");
    let (k, other) = (format!("{p}k"), format!("{p}other"));
    let before = a
        .get(LEADER_TERM_KEY, NOW)
        .await
        .unwrap()
        .map(|r| r.version);
    let t1 = before.unwrap_or(0) + 1;
    // The counter is not at t1 yet.
    let early = one(a, put(&k, b"early", 1, None).fenced(t1)).await;
    assert_eq!(early, Err(StoreError::Fenced));
    assert_eq!(a.get(&k, NOW).await.unwrap(), None);
    one(b, put(LEADER_TERM_KEY, b"", t1, before)).await.unwrap();
    one(a, put(&k, b"a", 1, None).fenced(t1)).await.unwrap();
    let lost = one(a, put(&k, b"x", 9, Some(8)).fenced(t1)).await;
    assert_eq!(
        lost,
        Err(StoreError::Conflict),
        "the write's own CAS still holds"
    );
    // A later leader takes office: t1's writes are refused though their CAS would hold.
    one(b, put(LEADER_TERM_KEY, b"", t1 + 1, Some(t1)))
        .await
        .unwrap();
    for late in [put(&k, b"late", 2, Some(1)), del(&k, 1)] {
        assert_eq!(one(a, late.fenced(t1)).await, Err(StoreError::Fenced));
    }
    assert_eq!(a.get(&k, NOW).await.unwrap().unwrap().value, b"a");
    // Beside unfenced writes in one batch, each is answered on its own.
    let r = a
        .apply(
            vec![
                put(&other, b"1", 1, None),
                put(&k, b"late", 2, Some(1)).fenced(t1),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(r, vec![Ok(()), Err(StoreError::Fenced)]);
    one(a, put(&k, b"t2", 2, Some(1)).fenced(t1 + 1))
        .await
        .unwrap();
    assert_eq!(a.get(&k, NOW).await.unwrap().unwrap().value, b"t2");
}

pub async fn all<S: Store + Clone>(s: S, exact_watch: bool) {
    watch(&s, exact_watch).await;
    semantics(&s).await;
    ttl(&s).await;
    scans(&s).await;
    large_values(&s).await;
    cas_race(&s).await;
    two_handles(&s, &s.clone()).await;
    fencing(&s, &s.clone()).await;
}
