//! What one step of the node hands the runtime: store writes and the transmits that may
//! only leave once those writes are durable (durable before visible).

use crate::store::StoreWrite;
use crate::transaction::Transmit;

/// Store writes and the transmits that may only leave once the writes are durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub writes: Vec<StoreWrite>,
    pub transmits: Vec<Transmit>,
    /// The transmits reveal the batch's deletes too (a de-REGISTER's 200), not only its
    /// puts. A call's last delete reveals nothing: its BYEs must leave whether or not the
    /// record could be removed yet (the read-back removes it later).
    pub reveals_deletes: bool,
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
    }

    /// Whether the transmits must stay back because these of the batch's writes failed
    /// (durable before visible): a failed put always holds them, a failed delete when the
    /// transmits reveal it.
    pub fn held_by<'a>(&self, failed: impl IntoIterator<Item = &'a StoreWrite>) -> bool {
        failed.into_iter().any(|w| match w {
            StoreWrite::Put { .. } => true,
            StoreWrite::Delete { .. } => self.reveals_deletes,
        })
    }
}
