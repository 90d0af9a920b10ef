//! The node's counters, which the runtime exposes as metrics.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub calls_attempted: u64,
    pub calls_answered: u64,
    pub calls_failed: u64,
    /// Rejected messages by the rule they broke.
    pub parse_errors: BTreeMap<String, u64>,
    /// Messages received, by method or status code.
    pub messages_in: BTreeMap<String, u64>,
    /// Messages sent, by method or status code.
    pub messages_out: BTreeMap<String, u64>,
    pub store_failures: u64,
    /// New requests answered 503 because too much waited for the store.
    pub overload_refusals: u64,
    /// Responses the transaction layer refused, by reason (`InvalidState` is a second
    /// final response: a bug of ours; `UnknownTransaction` one that ended meanwhile).
    pub responses_refused: BTreeMap<String, u64>,
    /// Retransmissions not sent because the first copy still waited for the store.
    pub retransmissions_dropped: u64,
    /// Call records of this node that no call held, deleted by the sweep.
    pub records_swept: u64,
    /// In-dialog requests for a live owner's call forwarded to it (each copy), and its
    /// responses sent on through their requests' server transactions.
    pub forwarded: u64,
    pub forwarded_responses: u64,
    /// REGISTER queries left unanswered (until retransmitted) while a write of their AOR
    /// waited for the store.
    pub lookups_deferred: u64,
    /// Lookups of an AOR (an INVITE's callee, a REGISTER query) that found nothing held
    /// and read the store before being answered (in a cluster: see `node::bindings`).
    pub lookups_read_through: u64,
    /// Expired bindings whose removal this node wrote (alone, or as the cluster's leader:
    /// the registration watchdog).
    pub bindings_expired: u64,
    /// Bindings whose flow (a connection, no Path) lived on a member that is gone, whose
    /// removal this node wrote as the cluster's leader.
    pub flow_bindings_removed: u64,
    /// Calls of another (dead) member this node took over, and in-dialog requests for
    /// calls it did not hold that it loaded from the store.
    pub takeovers: u64,
    pub calls_loaded: u64,
    /// Calls of members that left that this node set out to adopt (rendezvous hashing
    /// gave them to it), whether or not anyone spoke on them.
    pub adoptions: u64,
    /// Calls of dead members that nobody adopted, taken by this node as the leader's chore.
    pub orphans_adopted: u64,
    /// Takeovers made from the standby's copy of the record, with no store read.
    pub standby_takeovers: u64,
    /// Takeovers of a dead member's call: milliseconds from the last member list that
    /// still had the owner to the takeover (detection, the read and the claim).
    pub failover_ms: Histogram,
}

/// A Prometheus-style histogram with fixed buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket of [`Histogram::BOUNDS`] (not cumulative), then the overflow.
    pub counts: [u64; 10],
    pub sum: u64,
}

impl Histogram {
    /// Upper bounds of the buckets, in milliseconds (failover: around a lease TTL).
    pub const BOUNDS: [u64; 9] = [250, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000];

    pub fn observe(&mut self, v: u64) {
        let i = Self::BOUNDS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(Self::BOUNDS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The first line's method or status code, for counting.
pub(crate) fn label(bytes: &[u8]) -> String {
    let line = bytes.split(|b| *b == b'\r').next().unwrap_or(b"");
    let text = String::from_utf8_lossy(line);
    match text.strip_prefix("SIP/2.0 ") {
        Some(rest) => rest.chars().take(3).collect(),
        None => text.split(' ').next().unwrap_or("").to_string(),
    }
}
