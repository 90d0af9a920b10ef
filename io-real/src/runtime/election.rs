//! Leader election: the member that holds the `leader` record runs the cluster's chores
//! (`cluster::Leader` tells the recipe). Every member takes part: each third of the TTL it
//! reads the record; with none, it creates the record with the next term and, once that
//! landed, moves the term counter to it; holding it, it renews it (compare-and-swap on its
//! version, as the member record); otherwise it notes who leads.
//!
//! A member leads only while its member lease holds and its leader record has more than a
//! quarter of the TTL left ([`Office::term`]), by the same reasoning as the lease: the
//! renewal's expiry counts from when it was sent. A leader that cannot renew falls silent
//! by itself before its record runs out and another member can be elected.

use super::membership::{leased_put, Lease};
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
    /// The term this member moved the term counter to last (its own, while it leads).
    taken: AtomicU64,
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
            // The next term; the counter moves to it only once this record has landed.
            let counter = store.get(LEADER_TERM_KEY, now).await?.map(|r| r.version);
            let l = Leader {
                schema: Leader::SCHEMA,
                node: id,
                incarnation,
                term: counter.unwrap_or(0) + 1,
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
            if office.taken.load(Ordering::Acquire) != me.term {
                // Not the leader until the counter names our term: a try that failed is
                // made again at the next renewal.
                if let Err(e) = take_term(store, &me, clock).await {
                    office.valid_until.store(0, Ordering::Release);
                    if e == StoreError::Conflict {
                        // The counter went past our term (an earlier candidate's late
                        // write): give the record up; a later round campaigns again.
                        let w = StoreWrite::Delete {
                            key: LEADER_KEY.to_string(),
                            expect: version,
                        };
                        let _ = store.apply(vec![w], clock.now()).await;
                    }
                    return Err(e);
                }
                office.taken.store(me.term, Ordering::Release);
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

/// Moves the leaders' term counter to `term` (from the term before it), once this member's
/// leader record has landed: from then on the store refuses every chore write fenced by an
/// earlier term ([`StoreWrite::Fenced`]). Only the holder of the record moves the counter,
/// so candidates racing for the office cannot leave the winner's term behind the counter.
/// The counter holds the leader's record too: two holders of one term (a record that ran
/// out while its holder could not reach the store, and the next candidate's) then write
/// different bytes, and an ambiguous answer is never settled as ours when it was the
/// other's (store-leader-change-during-takeover seed 555).
async fn take_term<S: Store>(store: &S, me: &Leader, clock: Clock) -> Result<(), StoreError> {
    let term = me.term;
    let w = StoreWrite::Put {
        key: LEADER_TERM_KEY.to_string(),
        value: me.encode(),
        version: term,
        expect: (term > 1).then_some(term - 1),
        expires_at: None,
    };
    crate::store::apply_resolved(store, vec![w], || clock.now(), 1_000)
        .await
        .pop()
        .unwrap_or_else(|| Err(StoreError::Fatal("no answer".into())))
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
