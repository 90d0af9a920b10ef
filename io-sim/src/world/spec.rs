//! What defines a run besides its seed: the world's size, workload, network, strategy and
//! fault plan, and the mutants the checks are shown failing on.

use super::Fault;
use crate::link::LinkFaults;

/// Everything that defines a run besides its seed.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    pub nodes: usize,
    pub uas: usize,
    /// Pairs of devices sharing an address-of-record, each registering through its own
    /// node on one schedule (their REGISTERs race), checked against §10.3 as the devices
    /// saw it; they neither call nor are called.
    pub twins: usize,
    /// Calls started over `workload_ms`.
    pub calls: usize,
    pub workload_ms: u64,
    pub link: LinkFaults,
    /// Probability that a party goes silent in a confirmed call.
    pub vanish: f64,
    /// Fraction of user agents that stop refreshing their registration halfway.
    pub lapse: f64,
    pub store_latency_ms: (u64, u64),
    /// Node clocks differ from the true time by at most this.
    pub skew_bound_ms: u64,
    pub session_expires_secs: u64,
    /// The nodes form a cluster (membership under leases, any node serves any call, a dead
    /// member's calls adopted); user agents fail over between nodes in a dialog.
    pub cluster: bool,
    pub lease_ttl_ms: u64,
    /// Two regions (`world::regions`): the first half of the nodes on one store, the second
    /// half on another, registrations copied between them; each phone registers, calls and
    /// is called in its own region, and looks bindings up in both.
    pub regions: bool,
    /// The user agents reach the cluster through this many `drongo lb` instances (0: none;
    /// their members from the store; the nodes advertise the first); they do not fail
    /// over themselves. With two, each phone's home is one of them and each new request
    /// in a dialog goes through the other one than the last (balancers keep nothing per
    /// call, so a phone may switch mid-call).
    pub balancers: usize,
    /// `[cluster] strategy` (`none` loses a dead member's calls: the continuity check must
    /// say so).
    pub strategy: drongo_core::config::Strategy,
    /// `[cluster] transactions`: what the adopter of a ringing call does with it.
    pub transactions: drongo_core::config::Transactions,
    /// How long a callee rings before it answers or rejects (ms, drawn per call).
    pub ring_ms: (u64, u64),
    /// How long a caller waits for an answer before it cancels (ms, drawn per call).
    pub patience_ms: (u64, u64),
    /// How long a party takes to answer a re-INVITE (ms, drawn per request; `(0, 0)`:
    /// at once), as a phone that asks its user whether to take video would.
    pub reinvite_answer_ms: (u64, u64),
    pub faults: Vec<Fault>,
    /// How long the world runs on after the workload before the invariants are checked;
    /// `None`: long enough for every call to end by its session timer.
    pub settle_ms: Option<u64>,
    /// A mutant for the tests that show the checks can fail: a restarted node comes back
    /// without its calls, whose records are erased (as a node that forgot them would).
    pub mutant_forget_calls: bool,
    /// A mutant node that refuses every request (it demands credentials nobody has).
    pub mutant_refuse_all: bool,
    /// A mutant node that ignores CANCEL (the user agents' CANCELs never reach it), so a
    /// cancelled INVITE never gets its 487.
    pub mutant_ignore_cancel: bool,
    /// A mutant registrar that keeps a binding its user agent de-registers.
    pub mutant_keep_bindings: bool,
    /// A mutant node whose T1 is twice the RFC's: its retransmissions come late.
    pub mutant_slow_retransmissions: bool,
    /// A mutant cluster member whose lease does not silence it (its writes stay fenced).
    pub mutant_unfenced: bool,
    /// A mutant balancer whose probes never take a node out (`fall` beyond reach).
    pub mutant_lb_never_falls: bool,
    /// A mutant cluster whose members keep their bindings to themselves (each member's
    /// `reg/` records are its own), as every node did before the registrar was shared.
    pub mutant_private_bindings: bool,
    /// A mutant cluster behind balancers whose members send their INVITEs straight to the
    /// callees (no `[cluster] outbound`): a dead member's callee answers it, not the
    /// adopter.
    pub mutant_no_outbound: bool,
    /// A mutant cluster whose members run `local` transactions while the checks expect
    /// `transactions`: a relay or a ringing call in progress dies with its node.
    pub mutant_local_transactions: bool,
    /// The balancers' slow start (ms), checked: a node back after a kill gets new calls only
    /// as it ramps its share up (see `invariants::rejoined_nodes_ramp_up`). `None`: the
    /// default slow start, unchecked.
    pub slow_start_ms: Option<u64>,
    /// Ten new calls a second on two or three nodes: a node's messages wait behind its
    /// group commits as when the store is slow, so a retransmission may leave late (and
    /// the next keep its schedule); copies are then checked as with store faults.
    pub busy_nodes: bool,
    /// A mutant balancer without slow start: a node that comes back gets its full share of
    /// new calls at once.
    pub mutant_no_slow_start: bool,
    /// A mutant balancer whose slow start lasts a hundred times longer than the world
    /// says: a node that comes back never gets its share again.
    pub mutant_endless_slow_start: bool,
    /// A mutant election that hands a dead leader's term out again: when the world kills
    /// the leader it moves the store's term counter back by one.
    pub mutant_reused_term: bool,
    /// A mutant registrar without compare-and-swap: each write of an address-of-record
    /// replaces what the store holds (see `mutants::RegMutants::blind`).
    pub mutant_blind_bindings: bool,
    /// A mutant leader whose watchdog's removals never reach the store.
    pub mutant_idle_watchdog: bool,
    /// A mutant replicator whose removals of copies never reach the other region.
    pub mutant_kept_copies: bool,
    /// A mutant region that copies nothing to the other (no replicator).
    pub mutant_no_replication: bool,
    /// A mutant cluster whose adopters never ACK a callee's 2xx (the callees drop every ACK
    /// but from the node their INVITE came from), as before adopters sent their own.
    pub mutant_no_adopter_ack: bool,
}

impl Default for WorldSpec {
    fn default() -> Self {
        Self {
            nodes: 1,
            uas: 8,
            twins: 0,
            calls: 40,
            workload_ms: 60_000,
            link: LinkFaults::default(),
            vanish: 0.03,
            lapse: 0.25,
            store_latency_ms: (0, 2),
            skew_bound_ms: 0,
            session_expires_secs: 60,
            cluster: false,
            lease_ttl_ms: 2_000,
            regions: false,
            balancers: 0,
            strategy: drongo_core::config::Strategy::Lazy,
            transactions: drongo_core::config::Transactions::Local,
            ring_ms: (0, 5_000),
            patience_ms: (3_000, 9_000),
            reinvite_answer_ms: (0, 0),
            faults: Vec::new(),
            settle_ms: None,
            mutant_forget_calls: false,
            mutant_no_adopter_ack: false,
            mutant_refuse_all: false,
            mutant_ignore_cancel: false,
            mutant_keep_bindings: false,
            mutant_slow_retransmissions: false,
            mutant_unfenced: false,
            mutant_lb_never_falls: false,
            mutant_private_bindings: false,
            mutant_no_outbound: false,
            mutant_local_transactions: false,
            slow_start_ms: None,
            mutant_no_slow_start: false,
            mutant_endless_slow_start: false,
            mutant_reused_term: false,
            mutant_blind_bindings: false,
            mutant_idle_watchdog: false,
            mutant_kept_copies: false,
            mutant_no_replication: false,
            busy_nodes: false,
        }
    }
}

impl WorldSpec {
    /// Whether the fault plan makes store commits slow or failing (or the nodes are busy).
    pub fn store_misbehaves(&self) -> bool {
        self.busy_nodes
            || self.faults.iter().any(|f| {
                matches!(
                    f,
                    Fault::StoreUnavailable { .. }
                        | Fault::StoreAmbiguous { .. }
                        | Fault::PartitionNodeStore { .. }
                        | Fault::IsolateNode { .. }
                )
            })
    }
}
