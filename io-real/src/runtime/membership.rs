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

/// What this node claims in the cluster, shared with the transport (the fence), the
/// committer and the admin endpoint.
pub struct Lease {
    clock: Clock,
    ttl: u64,
    /// The lease holds until then (our clock, ms); 0: not held.
    valid_until: AtomicU64,
    incarnation: AtomicU64,
    /// Messages and write groups not sent because the lease did not hold.
    fenced_drops: AtomicU64,
    /// Chore writes the store refused under a later leader's term.
    term_refusals: AtomicU64,
    /// Times the lease was lost (and the node joined again).
    losses: AtomicU64,
    /// The live members at the last renewal.
    members: Mutex<Vec<Member>>,
    /// One more whenever the members or the incarnation change (the node loop looks).
    generation: AtomicU64,
    /// The calls this node runs (owns), and those it stands by for, as the node loop last
    /// said.
    calls: AtomicU64,
    standby: AtomicU64,
    /// Set when the node starts draining: the next renewal (at once) says so in the record,
    /// and the other members stop choosing this one as an adopter.
    draining: AtomicBool,
    wake: Notify,
    /// Leader election (`election`).
    office: Office,
    /// Woken whenever `generation` moves.
    changed: Notify,
    /// Every incarnation this process took (a join whose answer was lost may land later:
    /// a record naming one of these is our own, not a live rival's).
    taken: Mutex<Vec<u64>>,
}

impl Lease {
    /// Whether this process took `incarnation` (see `taken`).
    fn took(&self, incarnation: u64) -> bool {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&incarnation)
    }

    /// Whether the node may send and write now.
    pub fn holds(&self) -> bool {
        self.clock.now() + self.ttl / 4 < self.valid_until.load(Ordering::Acquire)
    }

    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    pub fn office(&self) -> &Office {
        &self.office
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Relaxed)
    }

    /// The node loop tells how many calls the node runs (for `/cluster`).
    pub fn set_calls(&self, n: u64, standby: u64) {
        self.calls.store(n, Ordering::Relaxed);
        self.standby.store(standby, Ordering::Relaxed);
    }

    /// Counts something the fence stopped.
    pub fn dropped(&self) {
        self.fenced_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a chore write the store refused: a later leader had taken office.
    pub fn refused_by_term(&self) {
        self.term_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever what [`Lease::view`] says does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Completes after the next change of [`Lease::generation`] (or at once when one
    /// happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn moved(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// What the core is told of the cluster: this node's incarnation, the live members
    /// (id, incarnation), those of them draining, and where members reach each (its
    /// bound address when a balancer's is what it advertises).
    pub fn view(&self) -> drongo_core::node::Input {
        let all = self.members();
        let draining = all
            .iter()
            .filter(|m| m.state == MemberState::Draining)
            .map(|m| m.id)
            .collect();
        let addresses = all
            .iter()
            .filter_map(|m| {
                let direct = if m.direct.is_empty() {
                    &m.sip
                } else {
                    &m.direct
                };
                Some((m.id, direct.parse().ok()?))
            })
            .collect();
        drongo_core::node::Input::Members {
            incarnation: self.incarnation(),
            members: all.iter().map(|m| (m.id, m.incarnation)).collect(),
            draining,
            addresses,
        }
    }

    /// The node drains: its record says so at once (a renewal ahead of time).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn members(&self) -> Vec<Member> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Prometheus lines for `/metrics`.
    pub fn metrics(&self) -> String {
        let now = self.clock.now();
        let left = self.valid_until.load(Ordering::Acquire).saturating_sub(now);
        let term = self.office.term(self, now);
        let mut s = String::new();
        for (name, kind, help, v) in [
            (
                "drongo_cluster_members",
                "gauge",
                "Live members at the last lease renewal.",
                self.members().len() as u64,
            ),
            (
                "drongo_incarnation",
                "gauge",
                "This node's incarnation (one more on every start and rejoin).",
                self.incarnation(),
            ),
            (
                "drongo_lease_remaining_ms",
                "gauge",
                "Milliseconds until this node's lease runs out.",
                left,
            ),
            (
                "drongo_lease_losses_total",
                "counter",
                "Times this node lost its lease and joined again.",
                self.losses.load(Ordering::Relaxed),
            ),
            (
                "drongo_leader",
                "gauge",
                "1 while this node is the cluster's leader.",
                u64::from(term.is_some()),
            ),
            (
                "drongo_leader_term",
                "gauge",
                "The term of the leader last seen (the fencing token of its chores).",
                self.office.leader().map_or(0, |l| l.term),
            ),
            (
                "drongo_elections_won_total",
                "counter",
                "Elections this node won.",
                self.office.won(),
            ),
            (
                "drongo_leader_fenced_writes_total",
                "counter",
                "Chore writes of this node the store refused: a later leader held office.",
                self.term_refusals.load(Ordering::Relaxed),
            ),
            (
                "drongo_fenced_drops_total",
                "counter",
                "Messages and write groups not sent because the lease did not hold.",
                self.fenced_drops.load(Ordering::Relaxed),
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        s
    }

    /// `/cluster`: this node and the members it sees, as JSON.
    pub fn status_json(&self, id: u16) -> String {
        let now = self.clock.now();
        let members: Vec<serde_json::Value> = self
            .members()
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "incarnation": m.incarnation,
                    "sip": m.sip,
                    "admin": m.admin,
                    "state": m.state,
                    "since": m.since,
                })
            })
            .collect();
        let me = serde_json::json!({
            "id": id,
            "incarnation": self.incarnation(),
            "lease_holds": self.holds(),
            "lease_remaining_ms": self.valid_until.load(Ordering::Acquire).saturating_sub(now),
            "calls": self.calls.load(Ordering::Relaxed),
            "standby": self.standby.load(Ordering::Relaxed),
            "leading": self.office.term(self, now).is_some(),
            "leader": self.office.leader().map(|l| serde_json::json!({
                "id": l.node,
                "incarnation": l.incarnation,
                "term": l.term,
            })),
            "members": members,
        });
        format!("{me}\n")
    }
}

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
