//! Leader election: the member that holds the `leader` record runs the cluster's chores
//! (`cluster::Leader` tells the recipe). Every member takes part: each third of the TTL it
//! reads the record; with none, it takes the next term and creates the record; holding it,
//! it renews it (compare-and-swap on its version, as the member record); otherwise it
//! notes who leads.
//!
//! A member leads only while its member lease holds and its leader record has more than a
//! quarter of the TTL left ([`Office::term`]), by the same reasoning as the lease: the
//! renewal's expiry counts from when it was sent. A leader that cannot renew falls silent
//! by itself before its record runs out and another member can be elected.

use super::membership::{increment, leased_put, Lease};
use super::Clock;
use crate::store::{Store, StoreError};
use drongo_core::cluster::Leader;
use drongo_core::store::{StoreWrite, StoredRecord, LEADER_KEY, LEADER_TERM_KEY};
use drongo_core::UnixMillis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// This member's view of the office.
#[derive(Default)]
pub struct Office {
    /// While this member leads: its record holds until then (our clock, ms); 0: not leading.
    valid_until: AtomicU64,
    /// The leader last seen (this member included).
    leader: Mutex<Option<Leader>>,
    /// Elections this member won.
    won: AtomicU64,
}

impl Office {
    /// This member's term while it may act as the leader, checked against `now`.
    pub fn term(&self, lease: &Lease, now: UnixMillis) -> Option<u64> {
        let holds = now + lease.ttl() / 4 < self.valid_until.load(Ordering::Acquire);
        let me = self.leader()?;
        (holds && lease.holds() && me.incarnation == lease.incarnation()).then_some(me.term)
    }

    /// The leader last seen.
    pub fn leader(&self) -> Option<Leader> {
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }

    fn saw(&self, l: Option<Leader>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }
}

/// One round: read the record, then campaign, renew or follow.
async fn round<S: Store>(
    store: &S,
    id: u16,
    lease: &Lease,
    office: &Office,
    clock: Clock,
) -> Result<(), StoreError> {
    let ttl = lease.ttl();
    if !lease.holds() {
        office.valid_until.store(0, Ordering::Release);
        return Ok(());
    }
    let now = clock.now();
    let record: Option<StoredRecord> = store.get(LEADER_KEY, now).await?;
    let current = record.as_ref().and_then(|r| Leader::decode(&r.value));
    let incarnation = lease.incarnation();
    let (me, version, expect) = match (&record, current) {
        (Some(r), Some(l)) if l.node == id && l.incarnation == incarnation => {
            (l, r.version + 1, Some(r.version))
        }
        (Some(_), other) => {
            office.valid_until.store(0, Ordering::Release);
            office.saw(other);
            return Ok(());
        }
        (None, _) => {
            let term = increment(store, LEADER_TERM_KEY, now).await?;
            let l = Leader {
                schema: Leader::SCHEMA,
                node: id,
                incarnation,
                term,
            };
            (l, 1, None)
        }
    };
    let sent = clock.now();
    let w = leased_put(
        LEADER_KEY.to_string(),
        me.encode(),
        version,
        expect,
        sent,
        ttl,
    );
    let answer = tokio::time::timeout(Duration::from_millis(ttl / 3), store.apply(vec![w], sent))
        .await
        .unwrap_or_else(|_| Err(StoreError::Ambiguous("timed out".into())))?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Fatal("no answer".into())));
    match answer {
        Ok(()) => {
            if expect.is_none() {
                office.won.fetch_add(1, Ordering::Relaxed);
                info!(node = id, term = me.term, "elected leader");
            }
            office.saw(Some(me));
            office.valid_until.store(sent + ttl, Ordering::Release);
            Ok(())
        }
        Err(e) => {
            // Lost the race, or the record ran out under us, or the answer is unknown: not
            // the leader until a round proves otherwise.
            office.valid_until.store(0, Ordering::Release);
            debug!(error = %e, "leader record not written");
            Err(e)
        }
    }
}

/// Takes part in elections for as long as the process lives.
pub async fn run<S: Store>(store: S, id: u16, lease: Arc<Lease>, clock: Clock) {
    let ttl = lease.ttl();
    loop {
        let failed = round(&store, id, &lease, lease.office(), clock)
            .await
            .inspect_err(|e| {
                if !matches!(e, StoreError::Conflict) {
                    warn!(error = %e, "leader election round failed");
                }
            })
            .is_err();
        let wait = if failed { ttl / 10 } else { ttl / 3 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// Gives the office up at the end of a drain: deletes the record if it is ours, so that
/// another member need not wait for it to run out.
pub async fn resign<S: Store>(store: &S, id: u16, lease: &Lease, clock: Clock) {
    let office = lease.office();
    office.valid_until.store(0, Ordering::Release);
    let now = clock.now();
    if let Ok(Some(r)) = store.get(LEADER_KEY, now).await {
        let ours = Leader::decode(&r.value)
            .is_some_and(|l| l.node == id && l.incarnation == lease.incarnation());
        if ours {
            let w = StoreWrite::Delete {
                key: LEADER_KEY.to_string(),
                expect: r.version,
            };
            let _ = store.apply(vec![w], now).await;
        }
    }
}
