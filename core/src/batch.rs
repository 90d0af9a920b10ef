//! What one step of the node hands the runtime: store writes and the transmits that may
//! only leave once those writes are durable (durable before visible); and the node's
//! ledger of the batches the store has not answered yet.

use crate::map::HashMap;
use crate::store::{Key, StoreWrite};
use crate::transaction::{Origin, Transmit, TxKey};
use crate::UnixMillis;
use std::collections::BTreeMap;

/// Names a batch, so that the store's answer can refer to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u64);

/// Store writes and the transmits that may only leave once the writes are durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub writes: Vec<StoreWrite>,
    pub transmits: Vec<Transmit>,
    /// The transmits reveal the batch's deletes too (a de-REGISTER's 200), not only its
    /// puts. A call's last delete reveals nothing: its BYEs must leave whether or not the
    /// record could be removed yet (the read-back removes it later).
    pub reveals_deletes: bool,
    /// The node waits to hear when the batch has left ([`crate::node::Input::Committed`],
    /// or `CommitFailed`): every batch with writes, and one that carries a Call-ID of such
    /// a batch still unanswered (it leaves after that one, so its messages' timers must
    /// count from when it really left).
    pub report: bool,
    /// The cluster incarnation the node was in when it made the batch (0: not in a
    /// cluster). A batch of an older incarnation than the node's lease is dropped whole:
    /// its calls were forgotten when the node joined again, and may have new owners.
    pub incarnation: u64,
    /// How many write failures (`CommitFailed`) the node had heard of when it made the
    /// batch: the runtime fails unwritten a write that expects a version a failed write
    /// was to make, if the node made it before it heard of that failure.
    pub heard: u64,
    /// Call-IDs of the legs of calls whose claim the batch writes (a takeover): until the
    /// store answers, their messages wait behind it and a copy the TU makes on them (a 2xx
    /// retransmitted until its ACK) is dropped, since a lost claim means the call is
    /// someone else's.
    pub claims: Vec<String>,
}

/// Why a write of a batch failed, as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The compare-and-swap lost: the record is not the version we wrote on. Someone else
    /// may own it now.
    Conflict,
    /// The store could not be reached in time; the write did not happen.
    Unavailable,
    /// The store may or may not have applied the write.
    Ambiguous,
    /// The store refused the write for good.
    Fatal,
    /// Not tried: the node's cluster lease did not hold (or the batch was of an earlier
    /// incarnation). The node may no longer own the call, so it decides nothing about
    /// it: it lets go of the call without a word and loads it again once it is a member
    /// in good standing (`Node::handle_members`).
    Fenced,
}

/// Whether a failed write holds back its batch's transmits.
fn holds(reveals_deletes: bool, put: bool) -> bool {
    put || reveals_deletes
}

impl Batch {
    /// What the batch must be kept in order with: the store keys it writes and the Call-IDs
    /// of its messages. Two batches that share none may be committed and sent in either
    /// order; two that share one must keep theirs.
    pub fn order_keys(&self) -> impl Iterator<Item = &str> {
        self.writes
            .iter()
            .map(StoreWrite::key)
            .chain(self.transmits.iter().filter_map(|t| t.call_id.as_deref()))
            .chain(self.claims.iter().map(String::as_str))
    }

    /// Whether the transmits must stay back because these of the batch's writes failed
    /// (durable before visible): a failed put always holds them, a failed delete when the
    /// transmits reveal it.
    pub fn held_by<'a>(&self, failed: impl IntoIterator<Item = &'a StoreWrite>) -> bool {
        failed.into_iter().any(|w| {
            let put = w.is_state_put();
            holds(self.reveals_deletes, put)
        })
    }
}

/// What the node remembers of a batch with writes until the store answers: enough to undo
/// it without its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// Each write's key and whether it stores state ([`StoreWrite::is_state_put`]), in
    /// the batch's order.
    pub(crate) writes: Vec<(String, bool)>,
    /// Each transmit's origin.
    pub(crate) transmits: Vec<Origin>,
    pub(crate) reveals_deletes: bool,
    /// When the node made it.
    pub(crate) made_at: UnixMillis,
    /// The Call-IDs it holds busy (see [`Ledger::is_busy`]).
    busy: Vec<String>,
    /// The Call-IDs whose call it claims.
    pub(crate) claims: Vec<String>,
}

impl Sent {
    /// Whether these failures held back the transmits.
    pub(crate) fn held_by(&self, errors: &[(usize, WriteError)]) -> bool {
        errors.iter().any(|(i, _)| {
            self.writes
                .get(*i)
                .is_some_and(|(_, put)| holds(self.reveals_deletes, *put))
        })
    }
}

/// The transaction a transmit belongs to, if any.
fn tx_of(origin: &Origin) -> Option<&TxKey> {
    match origin {
        Origin::Request(k) | Origin::Response(k, _) | Origin::Ack(k) => Some(k),
        Origin::Stateless => None,
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = counts.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            counts.remove(k);
        }
    }
}

/// The batches with writes the store has not answered yet.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next: u64,
    sent: BTreeMap<BatchId, Sent>,
    /// How many unanswered batches carry each Call-ID; only looked up.
    busy: HashMap<String, u32>,
    /// How many unanswered batches carry a message of each transaction; only looked up.
    busy_tx: HashMap<TxKey, u32>,
    /// How many unanswered batches claim each Call-ID's call (see [`Batch::claims`]).
    claimed: HashMap<String, u32>,
}

impl Ledger {
    /// A fresh batch id.
    pub(crate) fn next_id(&mut self) -> BatchId {
        self.next += 1;
        BatchId(self.next)
    }

    pub(crate) fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether a batch with these transmits would wait behind an unanswered one.
    pub(crate) fn holds_back(&self, transmits: &[Transmit]) -> bool {
        transmits
            .iter()
            .filter_map(|t| t.call_id.as_deref())
            .any(|c| self.is_busy(c))
    }

    /// Remembers a batch, made at `now`, until the runtime reports it.
    pub(crate) fn record(&mut self, b: &Batch, now: UnixMillis) {
        let mut busy: Vec<String> = b
            .transmits
            .iter()
            .filter_map(|t| t.call_id.clone())
            .chain(b.claims.iter().cloned())
            .chain(b.writes.iter().filter_map(|w| match Key::parse(w.key()) {
                Some(Key::Call(id)) => Some(id.to_string()),
                // An AOR's key itself (see `Ledger::is_busy`).
                Some(Key::Reg(_)) => Some(w.key().to_string()),
                // Membership is the runtime's, never in a batch.
                Some(
                    Key::Node(_)
                    | Key::Incarnation(_)
                    | Key::Leg(_)
                    | Key::Owns(_)
                    | Key::Leader
                    | Key::Copy(..),
                )
                | None => None,
            }))
            .collect();
        busy.sort();
        busy.dedup();
        for c in &busy {
            *self.busy.entry(c.clone()).or_default() += 1;
        }
        for k in b.transmits.iter().filter_map(|t| tx_of(&t.origin)) {
            *self.busy_tx.entry(k.clone()).or_default() += 1;
        }
        for c in &b.claims {
            *self.claimed.entry(c.clone()).or_default() += 1;
        }
        let sent = Sent {
            writes: b
                .writes
                .iter()
                .map(|w| (w.key().to_string(), w.is_state_put()))
                .collect(),
            transmits: b.transmits.iter().map(|t| t.origin.clone()).collect(),
            reveals_deletes: b.reveals_deletes,
            made_at: now,
            busy,
            claims: b.claims.clone(),
        };
        self.sent.insert(b.id, sent);
    }

    /// The store answered batch `id`.
    pub(crate) fn settle(&mut self, id: BatchId) -> Option<Sent> {
        let sent = self.sent.remove(&id)?;
        for c in &sent.busy {
            release(&mut self.busy, c);
        }
        for k in sent.transmits.iter().filter_map(tx_of) {
            release(&mut self.busy_tx, k);
        }
        for c in &sent.claims {
            release(&mut self.claimed, c);
        }
        Some(sent)
    }

    /// Whether a retransmission with `origin` on `call_id` is dropped: its transaction's
    /// first copy still waits for the store in an unanswered batch (the peer has not had
    /// it; the transaction's next timer sends another). A copy the TU makes itself (a 2xx
    /// retransmitted until its ACK) is known only by its Call-ID. A transaction whose first
    /// copy left goes on with its schedule, whatever else of its call waits, but for a
    /// call whose claim is unanswered: a transaction restored with it (a ringing call's)
    /// sends nothing until the call is known to be ours (store-leader-change-during-
    /// takeover seed 1: a restarted owner and an adopter both sent an INVITE copy).
    pub(crate) fn holds_copy(&self, origin: &Origin, call_id: Option<&str>) -> bool {
        let claimed = call_id.is_some_and(|c| self.claimed.contains_key(c));
        match tx_of(origin) {
            Some(k) => claimed || self.busy_tx.contains_key(k),
            None => call_id.is_some_and(|c| self.is_busy(c)),
        }
    }

    /// Whether a batch carrying `call_id` (or writing the AOR key `reg/…`) waits for the
    /// store. A retransmission on such a
    /// Call-ID is dropped: it would only queue behind the batch (the runtime keeps a
    /// Call-ID's messages in order) and leave in a burst with the first copy, or reveal
    /// what the batch's failure takes back.
    pub(crate) fn is_busy(&self, call_id: &str) -> bool {
        self.busy.contains_key(call_id)
    }
}
