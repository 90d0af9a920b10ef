//! The lease: what this node claims in the cluster, and the fence that reads it (see the
//! module doc of [`super`]).

use super::super::election::Office;
use super::super::Clock;
use drongo_core::cluster::{Member, MemberState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// What this node claims in the cluster, shared with the transport (the fence), the
/// committer and the admin endpoint.
pub struct Lease {
    pub(super) clock: Clock,
    pub(super) ttl: u64,
    /// The lease holds until then (our clock, ms); 0: not held.
    pub(super) valid_until: AtomicU64,
    pub(super) incarnation: AtomicU64,
    /// Messages and write groups not sent because the lease did not hold.
    pub(super) fenced_drops: AtomicU64,
    /// Chore writes the store refused under a later leader's term.
    pub(super) term_refusals: AtomicU64,
    /// Times the lease was lost (and the node joined again).
    pub(super) losses: AtomicU64,
    /// The live members at the last renewal.
    pub(super) members: Mutex<Vec<Member>>,
    /// One more whenever the members or the incarnation change (the node loop looks).
    pub(super) generation: AtomicU64,
    /// The calls this node runs (owns), and those it stands by for, as the node loop last
    /// said.
    pub(super) calls: AtomicU64,
    pub(super) standby: AtomicU64,
    /// Set when the node starts draining: the next renewal (at once) says so in the record,
    /// and the other members stop choosing this one as an adopter.
    pub(super) draining: AtomicBool,
    pub(super) wake: Notify,
    /// Leader election (`election`).
    pub(super) office: Office,
    /// Woken whenever `generation` moves.
    pub(super) changed: Notify,
    /// Every incarnation this process took (a join whose answer was lost may land later:
    /// a record naming one of these is our own, not a live rival's).
    pub(super) taken: Mutex<Vec<u64>>,
}

impl Lease {
    /// Whether this process took `incarnation` (see `taken`).
    pub(super) fn took(&self, incarnation: u64) -> bool {
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

    pub(super) fn moved(&self) {
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
