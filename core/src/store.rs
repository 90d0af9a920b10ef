//! What the core asks of a store, as data: the core never talks to a store client. The
//! runtime commits a batch's writes (one group commit for many) before it releases the
//! transmits that depend on them, and tells the core about writes that failed.
//!
//! Every record carries a version. A write names the version it expects to replace (`None`
//! to create), so two writers can never both win (compare-and-swap).

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreWrite {
    /// Store `value` at `key` as version `version`, if the current version is `expect`
    /// (`None`: the key must not exist). `expires_at` makes it a lease: readers treat the
    /// record as absent after that time.
    Put {
        key: String,
        value: Vec<u8>,
        version: u64,
        expect: Option<u64>,
        expires_at: Option<UnixMillis>,
    },
    /// Delete `key` if its version is `expect`.
    Delete { key: String, expect: u64 },
    /// `write`, only while the leaders' term counter (`leader-term`) is at `term`: a
    /// leader's chore, refused by the store once a later leader took office (the fencing
    /// token of the etcd election recipe, checked by the store itself, not by the writer).
    Fenced { term: u64, write: Box<StoreWrite> },
}

impl StoreWrite {
    /// Whether this write stores state that a message may reveal (durable before
    /// visible): every put but a tombstone's and an owner index entry's. A tombstone (an
    /// expiring call or A-leg record, `b2bua::tombstone`) is best effort: the BYEs of its
    /// call leave whether or not it was written. No message reveals the owner index (it
    /// only lets adopters find a dead member's calls without a scan; one it misses, the
    /// leader's sweep finds): its put failing must not withdraw what a takeover sends,
    /// nor end the call. A claim's entry can already exist, left by an earlier claim of
    /// the same member that lost its call's compare-and-swap (cluster-chaos seed 476: the
    /// next claim won the call but its index put conflicted, and the member ended the call
    /// it had just won, then sent its 2xx twice).
    pub fn is_state_put(&self) -> bool {
        match self.unfenced() {
            StoreWrite::Put {
                key, expires_at, ..
            } => {
                let call = key.starts_with(CALL_PREFIX) || key.starts_with(LEG_PREFIX);
                let tombstone = call && expires_at.is_some();
                !tombstone && !key.starts_with(OWNS_PREFIX)
            }
            StoreWrite::Delete { .. } | StoreWrite::Fenced { .. } => false,
        }
    }

    pub fn key(&self) -> &str {
        match self.unfenced() {
            StoreWrite::Put { key, .. } | StoreWrite::Delete { key, .. } => key,
            StoreWrite::Fenced { write, .. } => write.key(),
        }
    }

    /// This write, refused by the store unless the leaders' term is still `term`.
    pub fn fenced(self, term: u64) -> StoreWrite {
        let write = match self {
            StoreWrite::Fenced { write, .. } => write,
            w => Box::new(w),
        };
        StoreWrite::Fenced { term, write }
    }

    /// The leader's term this write is fenced by, if any.
    pub fn fence(&self) -> Option<u64> {
        match self {
            StoreWrite::Fenced { term, .. } => Some(*term),
            _ => None,
        }
    }

    /// The put or delete itself, fenced or not.
    pub fn unfenced(&self) -> &StoreWrite {
        match self {
            StoreWrite::Fenced { write, .. } => write.unfenced(),
            w => w,
        }
    }

    /// The put or delete itself, fenced or not.
    pub fn into_unfenced(self) -> StoreWrite {
        match self {
            StoreWrite::Fenced { write, .. } => write.into_unfenced(),
            w => w,
        }
    }

    /// The record the write leaves in the store (`None` for a delete).
    pub fn into_record(self) -> Option<StoredRecord> {
        match self.into_unfenced() {
            StoreWrite::Put {
                key,
                value,
                version,
                expires_at,
                ..
            } => Some(StoredRecord {
                key,
                value,
                version,
                expires_at,
            }),
            StoreWrite::Delete { .. } | StoreWrite::Fenced { .. } => None,
        }
    }
}

/// A record as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
    pub expires_at: Option<UnixMillis>,
}

impl StoredRecord {
    /// Whether the record still counts at `now`: a record past its expiry is absent to every
    /// reader, whether or not the backend has removed it yet.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// The key space: what each kind of record is stored under. The only place that knows the
/// prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `call/{id}`: one B2BUA call.
    Call(&'a str),
    /// `reg/{aor}`: the bindings of one address-of-record.
    Reg(&'a str),
    /// `node/{id}`: a cluster member, under its lease (`cluster::Member`).
    Node(&'a str),
    /// `incarnation/{id}`: how many times a member id has started.
    Incarnation(&'a str),
    /// `leg/{call-id}`: in a cluster, the call (`call/{id}`) whose A-leg has this Call-ID,
    /// so that any node can find the call of a request from the caller.
    Leg(&'a str),
    /// `owns/{node}/{call}`: in a cluster, the owner index: the calls of a member, for its
    /// adopters to find without scanning every call.
    Owns(&'a str),
    /// `leader` and `leader-term`: the cluster's leader and its term counter.
    Leader,
    /// `rreg/{region}/{aor}`: a read-only copy of another region's `reg/{aor}`, written by
    /// that region's replicator (region, aor).
    Copy(&'a str, &'a str),
}

/// Prefix of every call record.
pub const CALL_PREFIX: &str = "call/";
/// Prefix of every registration record.
pub const REG_PREFIX: &str = "reg/";
/// Prefix of every member record.
pub const NODE_PREFIX: &str = "node/";
/// Prefix of every member's incarnation counter.
pub const INCARNATION_PREFIX: &str = "incarnation/";
/// Prefix of every A-leg index record.
pub const LEG_PREFIX: &str = "leg/";
/// Prefix of the owner index.
pub const OWNS_PREFIX: &str = "owns/";
/// Prefix of the copies of other regions' registration records.
pub const COPY_PREFIX: &str = "rreg/";
/// The leader record (`cluster::Leader`), under its holder's lease.
pub const LEADER_KEY: &str = "leader";
/// The leaders' term counter: one more for every candidate, never expiring.
pub const LEADER_TERM_KEY: &str = "leader-term";

impl<'a> Key<'a> {
    /// What `key` is the key of; `None` for a key outside the space.
    pub fn parse(key: &'a str) -> Option<Key<'a>> {
        if let Some(id) = key.strip_prefix(CALL_PREFIX) {
            Some(Key::Call(id))
        } else if let Some(aor) = key.strip_prefix(REG_PREFIX) {
            Some(Key::Reg(aor))
        } else if let Some(id) = key.strip_prefix(NODE_PREFIX) {
            Some(Key::Node(id))
        } else if let Some(id) = key.strip_prefix(INCARNATION_PREFIX) {
            Some(Key::Incarnation(id))
        } else if let Some(id) = key.strip_prefix(LEG_PREFIX) {
            Some(Key::Leg(id))
        } else if key == LEADER_KEY || key == LEADER_TERM_KEY {
            Some(Key::Leader)
        } else if let Some(rest) = key.strip_prefix(COPY_PREFIX) {
            let (region, aor) = rest.split_once('/')?;
            Some(Key::Copy(region, aor))
        } else {
            key.strip_prefix(OWNS_PREFIX).map(Key::Owns)
        }
    }
}

/// Key of a B2BUA call record.
pub fn call_key(call: &str) -> String {
    format!("{CALL_PREFIX}{call}")
}

/// Key of a cluster member's record.
pub fn node_key(id: u16) -> String {
    format!("{NODE_PREFIX}{id}")
}

/// Key of a cluster member's incarnation counter.
pub fn incarnation_key(id: u16) -> String {
    format!("{INCARNATION_PREFIX}{id}")
}

/// Key of the index record of a call's A-leg Call-ID.
pub fn leg_key(call_id: &str) -> String {
    format!("{LEG_PREFIX}{call_id}")
}

/// Prefix of the owner index entries of member `node`.
pub fn owns_prefix(node: u16) -> String {
    format!("{OWNS_PREFIX}{node}/")
}

/// Key of the owner index entry of call `call` owned by member `node`.
pub fn owns_key(node: u16, call: &str) -> String {
    format!("{OWNS_PREFIX}{node}/{call}")
}

/// Prefix of the copies region `region`'s replicator writes.
pub fn copy_prefix(region: &str) -> String {
    format!("{COPY_PREFIX}{region}/")
}

/// Key of region `region`'s copy of `aor`'s bindings.
pub fn copy_key(region: &str, aor: &str) -> String {
    format!("{COPY_PREFIX}{region}/{aor}")
}

/// Key of the bindings of an address-of-record.
pub fn reg_key(aor: &str) -> String {
    format!("{REG_PREFIX}{aor}")
}
