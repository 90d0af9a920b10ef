//! Timer values (RFC 3261 §17, Table 4; RFC 6026 §8.11) and the names of the timers.
//!
//! No timer here is a handle: every deadline is a function of fields that are persisted with
//! the transaction (when it started, when it entered its state, when it last sent, how many
//! retransmissions it has sent). A node that loads a snapshot computes the same deadlines.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// T1, T2 and T4 in milliseconds (defaults 500 ms, 4 s, 5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerConfig {
    /// RTT estimate.
    pub t1: u64,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: u64,
    /// Maximum time a message stays in the network.
    pub t4: u64,
    /// Timer C (§16.6 step 11, "greater than 3 minutes" for proxies): how long the B2BUA
    /// lets the callee ring before it gives up with CANCEL and answers the caller 408.
    #[serde(default = "default_timer_c")]
    pub timer_c: u64,
}

fn default_timer_c() -> u64 {
    180_000
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: 500,
            t2: 4_000,
            t4: 5_000,
            timer_c: default_timer_c(),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M.
    pub fn timeout(&self) -> u64 {
        64 * self.t1
    }

    /// T1·2^n, the INVITE retransmission interval after n retransmissions (Timer A: no cap).
    pub fn doubling(&self, n: u32) -> u64 {
        self.t1.saturating_mul(1u64 << n.min(32))
    }

    /// min(T1·2^n, T2): Timers E and G.
    pub fn capped(&self, n: u32) -> u64 {
        self.doubling(n).min(self.t2)
    }
}

/// Timer D: at least 32 s over unreliable transports, zero over reliable ones.
pub const TIMER_D_UNRELIABLE: u64 = 32_000;

/// §17.2.1: a server INVITE transaction sends 100 Trying if the TU has not sent a
/// provisional response within 200 ms.
pub const TRYING_DELAY: u64 = 200;

/// The transaction timers by their RFC names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// INVITE request retransmit (client, unreliable).
    A,
    /// INVITE transaction timeout (client, Calling).
    B,
    /// Wait time for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, unreliable).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, Completed, unreliable).
    G,
    /// Wait time for ACK receipt (server INVITE, Completed).
    H,
    /// Wait time for ACK retransmits (server INVITE, Confirmed).
    I,
    /// Wait time for non-INVITE request retransmits (server, Completed).
    J,
    /// Wait time for response retransmits (client non-INVITE, Completed).
    K,
    /// Wait time for accepted INVITE request retransmits (server, Accepted; RFC 6026).
    L,
    /// Wait time for retransmission of 2xx to INVITE (client, Accepted; RFC 6026).
    M,
    /// The 200 ms after which a server INVITE transaction sends 100 Trying itself.
    Trying,
}

/// A due time and the timer that is due then.
pub type Deadline = (UnixMillis, Timer);

/// The earliest of several optional deadlines (ties go to the timer listed first).
pub(crate) fn earliest(candidates: &[Option<Deadline>]) -> Option<Deadline> {
    candidates.iter().flatten().copied().min()
}

/// Lays a retransmission schedule that started at `start` over a restored copy count
/// (`retransmits`, `last_sent_at`): where the schedule stands at `now`, as if its copies
/// had all been sent on time, when that is further on. `interval(n)` is the wait after n
/// retransmissions.
///
/// A snapshot is written when its transaction changes, not at each retransmission: a node
/// that restores one lays the schedule over it, so that its next copy comes when the
/// node that wrote it would have sent it (never early, as the snapshot's stale count
/// would make it). A copy due at `now` itself is taken as not sent: the node that wrote
/// the snapshot died before its moment came (a copy sent twice would be harmless too; the
/// split-run property test fixes the choice).
pub fn lay_schedule(
    start: u64,
    now: u64,
    interval: impl Fn(u32) -> u64,
    retransmits: &mut u32,
    last_sent_at: &mut u64,
) {
    let (mut n, mut at) = (0u32, start);
    while n < 64 {
        let next = at.saturating_add(interval(n));
        if next >= now {
            break;
        }
        at = next;
        n += 1;
    }
    if at > *last_sent_at {
        (*retransmits, *last_sent_at) = (n, at);
    }
}
