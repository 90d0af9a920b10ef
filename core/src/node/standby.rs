//! Hot standby (`[cluster] strategy = "hot-standby"`): every call has a standby, the member
//! that would adopt it if its owner died (the first of rendezvous hashing over the adopting
//! members, the owner left out). The runtime watches `call/` and hands the node every
//! change; the node keeps the records of the calls it stands by for, so that taking one over
//! (its owner gone, or a request for it here) needs no store read. The copy is only a head
//! start: the takeover is the usual compare-and-swap on the copy's version, and a copy
//! that is stale (the watch lags) loses it and is read back like any other.

use super::Node;
use crate::config::Strategy;
use crate::store::{Key, StoredRecord};
use crate::UnixMillis;
use std::collections::BTreeMap;

/// The records this node stands by for.
#[derive(Default)]
pub(super) struct Standby {
    /// Call id → its record as last seen.
    records: BTreeMap<String, StoredRecord>,
    /// Either leg's Call-ID → call id (a request carries one of them).
    legs: BTreeMap<String, String>,
}

/// The fields of a call record that say which Call-IDs reach it.
#[derive(serde::Deserialize)]
struct Legs {
    id: String,
    a: Leg,
    b: Leg,
}

#[derive(serde::Deserialize)]
struct Leg {
    call_id: String,
}

impl Standby {
    fn forget(&mut self, id: &str) {
        let Some(r) = self.records.remove(id) else {
            return;
        };
        if let Ok(l) = serde_json::from_slice::<Legs>(&r.value) {
            for leg in [l.a.call_id, l.b.call_id] {
                if self.legs.get(&leg).is_some_and(|c| c == id) {
                    self.legs.remove(&leg);
                }
            }
        }
    }
}

impl Node {
    /// A change to a record, seen by the runtime's watch (`None`: the record is gone). A
    /// call record is kept when this node stands by for the call, dropped otherwise; an
    /// AOR's record goes to the registrar (`bindings`).
    pub fn handle_watched(&mut self, now: UnixMillis, key: &str, record: Option<StoredRecord>) {
        self.now = now;
        match Key::parse(key) {
            Some(Key::Reg(aor)) => return self.binding_watched(aor, record),
            Some(Key::Copy(region, aor)) => {
                let record = record.filter(|r| r.is_live(now));
                return self.registrar.observe_copy(region, aor, record.as_ref());
            }
            _ => {}
        }
        if self.sink.cfg.cluster.strategy != Strategy::HotStandby {
            return;
        }
        let Some(Key::Call(id)) = Key::parse(key) else {
            return;
        };
        let me = self.sink.node_id;
        let legs = record
            .filter(|r| r.is_live(now) && crate::b2bua::Tombstone::parse(&r.value).is_none())
            .filter(|r| {
                let owner = crate::b2bua::owner_of(&r.value);
                owner != 0 && owner != me && self.standby_of(id, owner) == Some(me)
            })
            .and_then(|r| Some((serde_json::from_slice::<Legs>(&r.value).ok()?, r)));
        match legs {
            Some((l, r)) if l.id == id => {
                self.standby.legs.insert(l.a.call_id, l.id.clone());
                self.standby.legs.insert(l.b.call_id, l.id.clone());
                self.standby.records.insert(l.id, r);
            }
            _ => {
                self.standby.forget(id);
            }
        }
    }

    /// The member that would adopt `call` if `owner` died.
    fn standby_of(&self, call: &str, owner: u16) -> Option<u16> {
        crate::cluster::ranked(call, &self.adopters())
            .into_iter()
            .find(|m| *m != owner)
    }

    /// The held record of the call a request with this Call-ID (or the call id itself)
    /// belongs to. (Once the node owns the call, the watch reports its own write and the
    /// copy goes.)
    pub(super) fn standby_record(&self, call_id: &str) -> Option<(String, StoredRecord)> {
        let id = self.standby.legs.get(call_id)?;
        let r = self.standby.records.get(id)?;
        Some((id.clone(), r.clone()))
    }

    /// How many calls this node stands by for.
    pub fn standby_calls(&self) -> usize {
        self.standby.records.len()
    }
}
