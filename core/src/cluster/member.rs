//! A member's record, `node/{id}`: what it advertises and whether it is alive. It is
//! written with an expiry (the lease: renewed every third of the TTL), so a member that
//! stops renewing is absent to every reader once its lease runs out. The incarnation, one
//! more on every start, is kept apart under `incarnation/{id}` (no expiry), so that it
//! outlives the lease.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Started, not yet taking calls.
    Joining,
    Active,
    /// Finishing its calls before it stops: no new calls for it.
    Draining,
}

/// What `node/{id}` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Format of this record.
    pub schema: u32,
    pub id: u16,
    pub incarnation: u64,
    /// The SIP address it puts on the wire.
    pub sip: String,
    /// The SIP address it is bound to, where a load balancer in front of it (whose address
    /// it puts on the wire) reaches it; empty in records of older builds: then `sip`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub direct: String,
    pub admin: String,
    pub state: MemberState,
    /// When this incarnation joined.
    pub since: UnixMillis,
}

impl Member {
    pub const SCHEMA: u32 = 1;

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for a record this build cannot read.
    pub fn decode(bytes: &[u8]) -> Option<Member> {
        serde_json::from_slice::<Member>(bytes)
            .ok()
            .filter(|m| m.schema == Self::SCHEMA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let m = Member {
            schema: Member::SCHEMA,
            id: 2,
            incarnation: 7,
            sip: "127.0.0.1:5062".into(),
            direct: String::new(),
            admin: "127.0.0.1:9062".into(),
            state: MemberState::Active,
            since: 1_700_000_000_000,
        };
        assert_eq!(Member::decode(&m.encode()), Some(m.clone()));
        assert!(String::from_utf8_lossy(&m.encode()).contains("\"state\":\"active\""));
        assert_eq!(Member::decode(b"{"), None);
        let future = Member { schema: 2, ..m };
        assert_eq!(Member::decode(&future.encode()), None);
    }
}
