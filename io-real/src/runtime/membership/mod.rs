//! Cluster membership: the node's record `node/{id}` under a lease, renewed every third of
//! the TTL, and the fence that keeps a node whose lease may have run out from sending SIP
//! or writing.
//!
//! The lease is the record's expiry (the store contract: an expired record is absent to
//! every reader), so it works the same on etcd and in the simulated store. A renewal is a
//! compare-and-swap on the record's version; the lease holds until the expiry the last
//! successful renewal wrote, computed from the time the renewal was *sent* (it cannot have
//! taken effect earlier). The node acts only while the lease has more than a quarter of the
//! TTL left ([`Lease::holds`]): the margin covers clock differences between nodes and a
//! message already on its way. A renewal that finds the record gone or not ours (our lease
//! ran out, say while the process was stopped) means we lost it: the node stays silent
//! and joins again with a new incarnation.

use super::election::{self, Office};
use super::Clock;
use crate::store::{Store, StoreError};
use drongo_core::cluster::{Member, MemberState};
use drongo_core::store::{incarnation_key, node_key, StoreWrite, NODE_PREFIX};
use drongo_core::UnixMillis;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

mod lease;
pub use lease::Lease;

/// Who this node is.
#[derive(Clone)]
pub struct Identity {
    pub id: u16,
    pub sip: String,
    /// The bound SIP address, when a balancer's is advertised (see [`Member::direct`]).
    pub direct: String,
    pub admin: String,
}

/// Why a node could not join.
#[derive(Debug)]
pub enum JoinError {
    /// A live member holds this id.
    InUse(Member),
    Store(StoreError),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::InUse(m) => write!(
                f,
                "node id {} is held by a live member (incarnation {}, SIP {}, admin {}); \
                 refusing to start a second one",
                m.id, m.incarnation, m.sip, m.admin
            ),
            JoinError::Store(e) => write!(f, "cannot join the cluster: {e}"),
        }
    }
}

/// The next value of the counter at `key` (a record whose version is the count, never
/// expiring): a compare-and-swap increment, tried again when another writer got there
/// first. Incarnations and leader terms are such counters.
pub(super) async fn increment<S: Store>(
    store: &S,
    key: &str,
    now: UnixMillis,
) -> Result<u64, StoreError> {
    loop {
        let current = store.get(key, now).await?.map(|r| r.version);
        let next = current.unwrap_or(0) + 1;
        let w = StoreWrite::Put {
            key: key.to_string(),
            value: Vec::new(),
            version: next,
            expect: current,
            expires_at: None,
        };
        match store.apply(vec![w], now).await?.pop() {
            Some(Ok(())) => return Ok(next),
            Some(Err(StoreError::Conflict)) => continue,
            Some(Err(e)) => return Err(e),
            None => return Err(StoreError::Fatal("no answer".into())),
        }
    }
}

/// A record under a lease: `value` at `key` as `version` (if the current one is
/// `expect`), expiring a TTL after `now`, the time the write is sent. Member and leader
/// records are written so.
pub(super) fn leased_put(
    key: String,
    value: Vec<u8>,
    version: u64,
    expect: Option<u64>,
    now: UnixMillis,
    ttl: u64,
) -> StoreWrite {
    StoreWrite::Put {
        key,
        value,
        version,
        expect,
        expires_at: Some(now + ttl),
    }
}

/// Waits until no record holds `id`. A record that is not renewed while we watch (a
/// predecessor killed a moment ago, restarted by its supervisor) runs out within a TTL; one
/// that is renewed belongs to a live process, and then we refuse. A record of our own (an
/// earlier join of this process whose answer was lost, applied late) is ours to replace:
/// its version is returned, for the join's compare-and-swap.
async fn wait_for_the_id<S: Store>(
    store: &S,
    id: u16,
    clock: Clock,
    ttl: u64,
    lease: &Lease,
) -> Result<Option<u64>, JoinError> {
    let mut seen: Option<u64> = None;
    loop {
        let r = store
            .get(&node_key(id), clock.now())
            .await
            .map_err(JoinError::Store)?;
        let Some(r) = r else { return Ok(None) };
        let Some(m) = Member::decode(&r.value) else {
            return Ok(None);
        };
        if lease.took(m.incarnation) {
            return Ok(Some(r.version));
        }
        if seen.is_some_and(|v| v != r.version) {
            return Err(JoinError::InUse(m));
        }
        if seen.is_none() {
            info!(
                id,
                incarnation = m.incarnation,
                "node id held; waiting to see whether its lease is renewed"
            );
        }
        seen = Some(r.version);
        tokio::time::sleep(Duration::from_millis(ttl / 4)).await;
    }
}

/// Joins: refuses when a live member holds the id, takes the next incarnation, writes the
/// record under its lease. Returns the record and its version.
async fn join<S: Store>(
    store: &S,
    me: &Identity,
    clock: Clock,
    ttl: u64,
    lease: &Lease,
) -> Result<(Member, u64), JoinError> {
    let now = clock.now();
    let ours = wait_for_the_id(store, me.id, clock, ttl, lease).await?;
    let incarnation = increment(store, &incarnation_key(me.id), now)
        .await
        .map_err(JoinError::Store)?;
    lease
        .taken
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(incarnation);
    let m = Member {
        schema: Member::SCHEMA,
        id: me.id,
        incarnation,
        sip: me.sip.clone(),
        direct: me.direct.clone(),
        admin: me.admin.clone(),
        state: MemberState::Active,
        since: now,
    };
    let sent = clock.now();
    let version = ours.map_or(1, |v| v + 1);
    let w = leased_put(node_key(m.id), m.encode(), version, ours, sent, ttl);
    match store
        .apply(vec![w], sent)
        .await
        .map_err(JoinError::Store)?
        .pop()
    {
        Some(Ok(())) => {}
        Some(Err(StoreError::Conflict)) => {
            // Someone joined with this id between our read and our write.
            let r = store
                .get(&node_key(me.id), now)
                .await
                .map_err(JoinError::Store)?;
            return Err(match r.and_then(|r| Member::decode(&r.value)) {
                // An earlier join of ours, landed late: joined again over it.
                Some(other) if lease.took(other.incarnation) => {
                    JoinError::Store(StoreError::Retryable("an earlier join landed late".into()))
                }
                Some(other) => JoinError::InUse(other),
                None => JoinError::Store(StoreError::Conflict),
            });
        }
        Some(Err(e)) => return Err(JoinError::Store(e)),
        None => return Err(JoinError::Store(StoreError::Fatal("no answer".into()))),
    }
    lease.incarnation.store(incarnation, Ordering::Relaxed);
    lease.moved();
    lease.valid_until.store(sent + ttl, Ordering::Release);
    info!(id = me.id, incarnation, ttl_ms = ttl, "joined the cluster");
    Ok((m, version))
}

/// Joins the cluster (or refuses to start), then keeps the lease in a task of its own.
pub async fn start<S: Store + Clone>(
    store: S,
    me: Identity,
    clock: Clock,
    ttl: u64,
) -> Result<Arc<Lease>, JoinError> {
    let ttl = ttl.max(300);
    let lease = Arc::new(Lease {
        clock,
        ttl,
        valid_until: AtomicU64::new(0),
        incarnation: AtomicU64::new(0),
        fenced_drops: AtomicU64::new(0),
        term_refusals: AtomicU64::new(0),
        losses: AtomicU64::new(0),
        members: Mutex::new(Vec::new()),
        generation: AtomicU64::new(0),
        calls: AtomicU64::new(0),
        standby: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        wake: Notify::new(),
        office: Office::default(),
        changed: Notify::new(),
        taken: Mutex::new(Vec::new()),
    });
    // A store that does not answer for a while (an etcd leader election) is waited for,
    // as the state load waits; a live member with our id is not.
    let mut delay = 100;
    let (member, version) = loop {
        match join(&store, &me, clock, ttl, &lease).await {
            Ok(joined) => break joined,
            Err(JoinError::Store(e @ (StoreError::Retryable(_) | StoreError::Ambiguous(_))))
                if delay <= 20_000 =>
            {
                warn!(error = %e, "store not ready; joining again");
                tokio::time::sleep(Duration::from_millis(delay)).await;
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    };
    refresh_members(&store, &lease, clock.now()).await;
    tokio::task::spawn(election::run(store.clone(), me.id, lease.clone(), clock));
    tokio::task::spawn(keep(store, me, clock, lease.clone(), member, version));
    Ok(lease)
}

async fn refresh_members<S: Store>(store: &S, lease: &Lease, now: UnixMillis) {
    if let Ok(records) = store.scan(NODE_PREFIX, usize::MAX, now).await {
        let members: Vec<Member> = records
            .iter()
            .filter_map(|r| Member::decode(&r.value))
            .collect();
        let mut current = lease.members.lock().unwrap_or_else(|p| p.into_inner());
        if *current != members {
            *current = members;
            lease.moved();
        }
    }
}

/// Renews the lease every third of the TTL (sooner after a failure) for as long as the
/// process lives; joins again when it was lost.
async fn keep<S: Store>(
    store: S,
    me: Identity,
    clock: Clock,
    lease: Arc<Lease>,
    mut member: Member,
    mut version: u64,
) {
    let ttl = lease.ttl;
    let mut lost = false;
    // After a renewal that did not get through, the next goes sooner: a store that is
    // back before the record runs out keeps the lease.
    let mut failed = false;
    loop {
        let wait = match (lost, failed) {
            (true, _) => ttl / 2,
            (false, true) => ttl / 10,
            (false, false) => ttl / 3,
        };
        failed = false;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = lease.wake.notified() => {}
        }
        if lease.draining.load(Ordering::Acquire) {
            member.state = MemberState::Draining;
        }
        if lost {
            match join(&store, &me, clock, ttl, &lease).await {
                Ok((m, v)) => {
                    (member, version, lost) = (m, v, false);
                }
                Err(e) => warn!("rejoin: {e}"),
            }
            continue;
        }
        let sent = clock.now();
        let w = leased_put(
            node_key(member.id),
            member.encode(),
            version + 1,
            Some(version),
            sent,
            ttl,
        );
        // A renewal that takes longer than a third of the TTL is as good as failed (the
        // fence closes by itself meanwhile); its answer is then unknown.
        let answer =
            tokio::time::timeout(Duration::from_millis(ttl / 3), store.apply(vec![w], sent))
                .await
                .unwrap_or_else(|_| Err(StoreError::Ambiguous("renewal timed out".into())))
                .map(|mut r| r.pop());
        debug!(?answer, "lease renewal");
        match answer {
            Ok(Some(Ok(()))) => {
                version += 1;
                lease.valid_until.store(sent + ttl, Ordering::Release);
                refresh_members(&store, &lease, clock.now()).await;
                continue;
            }
            Ok(Some(Err(StoreError::Conflict))) => {}
            // Unavailable: try again soon; the fence closes by itself if this goes on.
            Ok(Some(Err(StoreError::Retryable(_)))) | Err(StoreError::Retryable(_)) => {
                failed = true;
                continue;
            }
            // Ambiguous or other: look at what the store holds.
            _ => {}
        }
        let now = clock.now();
        let read = tokio::time::timeout(
            Duration::from_millis(ttl / 3),
            store.get(&node_key(me.id), now),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::Retryable("read timed out".into())));
        match read {
            Ok(Some(r))
                if Member::decode(&r.value)
                    .is_some_and(|m| m.incarnation == member.incarnation) =>
            {
                // A renewal we could not confirm took effect: this one, or an earlier
                // attempt that landed late. The lease holds until the expiry that attempt
                // wrote (our clock: we computed it), not a TTL from this attempt.
                if r.version == version + 1 {
                    version += 1;
                    let until = r.expires_at.unwrap_or(0).min(sent + ttl);
                    lease.valid_until.store(until, Ordering::Release);
                } else {
                    failed = true;
                }
            }
            Ok(_) => {
                lease.valid_until.store(0, Ordering::Release);
                lease.losses.fetch_add(1, Ordering::Relaxed);
                error!(
                    id = me.id,
                    incarnation = member.incarnation,
                    "lease lost: sending and writing nothing until the node joins again"
                );
                lost = true;
            }
            Err(_) => failed = true,
        }
    }
}

/// Leaves the cluster at the end of a drain: deletes the record, so that the others need
/// not wait for the lease to run out.
pub async fn leave<S: Store>(store: &S, id: u16, lease: &Lease, clock: Clock) {
    election::resign(store, id, lease, clock).await;
    lease.valid_until.store(0, Ordering::Release);
    let now = clock.now();
    if let Ok(Some(r)) = store.get(&node_key(id), now).await {
        let ours = Member::decode(&r.value).is_some_and(|m| m.incarnation == lease.incarnation());
        if ours {
            let w = StoreWrite::Delete {
                key: node_key(id),
                expect: r.version,
            };
            let _ = store.apply(vec![w], now).await;
        }
    }
}
