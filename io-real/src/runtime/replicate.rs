//! Registrations across regions. Each region has its own store, and its registrations are
//! its own (a region keeps serving with the others out of reach). Its leader copies them,
//! asynchronously, into every other region's store as `rreg/{region}/{aor}`: there they
//! are read-only copies, which that region's members follow (a watch) and find on lookup
//! beside their own region's bindings.
//!
//! One follower per other region, on the leader only. It opens its watch on `reg/` first,
//! then makes the copies match this region's records (a full sync: puts what differs,
//! deletes copies whose record is gone, so a removal or an expiry made while the regions
//! were cut off is not undone after the heal), then copies each change as it comes. The
//! watch opened before the sync misses nothing after it; a broken watch, a failed write or
//! a lost compare-and-swap starts the follower again from the sync (so a full sync costs
//! only at a start, a handover or a failure, not every few seconds: a region may hold
//! hundreds of thousands of bindings). A copy
//! carries its record's version and expiry (the other store expires it as ours does), and
//! every write of a copy is a compare-and-swap on the version last seen there: two leaders
//! overlapping at a handover cannot put an older copy over a newer one.

use super::clock::Clock;
use super::membership::Lease;
use crate::store::{Change, Store, StoreError};
use drongo_core::store::{copy_key, copy_prefix, Key, StoreWrite, REG_PREFIX};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often a follower looks whether this member still leads, between changes.
const LEADS_EVERY: Duration = Duration::from_millis(500);

/// What the followers did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Replication {
    /// Copies written and removed in other regions' stores.
    pub copied: AtomicU64,
    pub removed: AtomicU64,
    /// Full syncs done, and those that failed (the other region out of reach).
    pub syncs: AtomicU64,
    pub failures: AtomicU64,
}

/// Starts one follower per other region; they copy while this member leads.
pub fn start<S: Store + Clone, P: Store + Clone>(
    local: S,
    region: String,
    peers: Vec<(String, P)>,
    lease: Arc<Lease>,
    clock: Clock,
) -> Arc<Replication> {
    let stats = Arc::new(Replication::default());
    for (name, peer) in peers {
        let f = Follower {
            local: local.clone(),
            peer,
            region: region.clone(),
            name,
            lease: lease.clone(),
            clock,
            stats: stats.clone(),
            copies: BTreeMap::new(),
        };
        tokio::task::spawn(f.run());
    }
    stats
}

struct Follower<S, P> {
    local: S,
    peer: P,
    /// Our region, and the one copied to.
    region: String,
    name: String,
    lease: Arc<Lease>,
    clock: Clock,
    stats: Arc<Replication>,
    /// The version of each copy in the other store, as last seen or written.
    copies: BTreeMap<String, u64>,
}

impl<S: Store, P: Store> Follower<S, P> {
    fn leads(&self) -> bool {
        self.lease
            .office()
            .term(&self.lease, self.clock.now())
            .is_some()
    }

    async fn run(mut self) {
        loop {
            while !self.leads() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match self.follow().await {
                Ok(()) => {}
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(region = %self.name, error = %e, "copying registrations: trying again");
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Syncs, then copies changes while this member leads; returns on the first failure.
    async fn follow(&mut self) -> Result<(), StoreError> {
        let mut changes = self.local.watch(REG_PREFIX).await?;
        self.sync().await?;
        info!(region = %self.name, copies = self.copies.len(), "registrations copied; following");
        let mut check = tokio::time::interval(LEADS_EVERY);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(c) => self.copy(c).await?,
                    None => return Err(StoreError::Retryable("watch ended".into())),
                },
                _ = check.tick() => {}
            }
            if !self.leads() {
                return Ok(());
            }
        }
    }

    /// Makes the other region's copies match our records.
    async fn sync(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let ours = self.local.scan(REG_PREFIX, usize::MAX, now).await?;
        let prefix = copy_prefix(&self.region);
        let theirs = self.peer.scan(&prefix, usize::MAX, now).await?;
        self.copies = theirs
            .iter()
            .filter_map(|r| match Key::parse(&r.key) {
                Some(Key::Copy(_, aor)) => Some((aor.to_string(), r.version)),
                _ => None,
            })
            .collect();
        let mut writes = Vec::new();
        let mut live = std::collections::BTreeSet::new();
        for r in ours.iter().filter(|r| r.is_live(now)) {
            let Some(Key::Reg(aor)) = Key::parse(&r.key) else {
                continue;
            };
            live.insert(aor.to_string());
            if let Some(w) = self.put(aor, r) {
                writes.push(w);
            }
        }
        for (aor, version) in &self.copies {
            if !live.contains(aor) {
                writes.push(StoreWrite::Delete {
                    key: copy_key(&self.region, aor),
                    expect: *version,
                });
            }
        }
        self.write(writes).await?;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Copies one change of our records.
    async fn copy(&mut self, c: Change) -> Result<(), StoreError> {
        let Some(Key::Reg(aor)) = Key::parse(&c.key) else {
            return Ok(());
        };
        let aor = aor.to_string();
        let write = match c.record.filter(|r| r.is_live(self.clock.now())) {
            Some(r) => self.put(&aor, &r),
            None => self.copies.get(&aor).map(|v| StoreWrite::Delete {
                key: copy_key(&self.region, &aor),
                expect: *v,
            }),
        };
        self.write(write.into_iter().collect()).await
    }

    /// The write that makes `aor`'s copy `r`, unless it is that already.
    fn put(&self, aor: &str, r: &drongo_core::store::StoredRecord) -> Option<StoreWrite> {
        let held = self.copies.get(aor).copied();
        (held != Some(r.version)).then(|| StoreWrite::Put {
            key: copy_key(&self.region, aor),
            value: r.value.clone(),
            version: r.version,
            expect: held,
            expires_at: r.expires_at,
        })
    }

    /// Writes `writes` to the other store and notes the copies' versions; a write that
    /// lost its compare-and-swap (another leader wrote meanwhile) makes the next sync.
    async fn write(&mut self, writes: Vec<StoreWrite>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let answers = self.peer.apply(writes.clone(), self.clock.now()).await?;
        let mut conflict = false;
        for (w, a) in writes.iter().zip(answers) {
            let Some(Key::Copy(_, aor)) = Key::parse(w.key()) else {
                continue;
            };
            match (w, a) {
                (StoreWrite::Put { version, .. }, Ok(())) => {
                    self.copies.insert(aor.to_string(), *version);
                    self.stats.copied.fetch_add(1, Ordering::Relaxed);
                }
                (StoreWrite::Delete { .. }, Ok(())) => {
                    self.copies.remove(aor);
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                (_, Err(StoreError::Conflict)) => conflict = true,
                (_, Err(e)) => return Err(e),
                (StoreWrite::Fenced { .. }, Ok(())) => {}
            }
        }
        if conflict {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }
}
