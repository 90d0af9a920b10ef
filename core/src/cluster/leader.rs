//! The leader record, `leader`: which member runs the cluster's chores (sweeping calls
//! nobody adopted; the registration watchdog later), and its term.
//!
//! The etcd election recipe on our store contract: the record is created only where none
//! is (compare-and-swap on absence), under an expiry that its holder renews like its member
//! record, so a dead leader's record runs out and another member takes the office. The term
//! is the fencing token: a candidate names the `leader-term` counter's next value (the
//! counter's version; it never expires) in its record, and once the record has landed it
//! moves the counter there by compare-and-swap. Only the record's holder moves it, so every
//! later leader holds a larger term than every earlier one, as etcd's create revision of the
//! election key would be, and the counter always names the leader in office: a chore write
//! fenced by an earlier term (`StoreWrite::Fenced`) is refused by the store itself.

use serde::{Deserialize, Serialize};

/// What `leader` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Format of this record.
    pub schema: u32,
    pub node: u16,
    /// The leader's incarnation: a member that joined again is not the leader its earlier
    /// incarnation was.
    pub incarnation: u64,
    pub term: u64,
}

impl Leader {
    pub const SCHEMA: u32 = 1;

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for a record this build cannot read.
    pub fn decode(bytes: &[u8]) -> Option<Leader> {
        serde_json::from_slice::<Leader>(bytes)
            .ok()
            .filter(|l| l.schema == Self::SCHEMA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let l = Leader {
            schema: Leader::SCHEMA,
            node: 3,
            incarnation: 4,
            term: 9,
        };
        assert_eq!(Leader::decode(&l.encode()), Some(l));
        assert_eq!(Leader::decode(b"{\"schema\":2,\"node\":1}"), None);
    }
}
