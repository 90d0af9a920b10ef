//! The registrar (RFC 3261 §10.3): bindings per address-of-record, with expirations that
//! are deadlines derived from stored state, Call-ID/CSeq ordering, `*` removal, Min-Expires
//! and a bound on bindings per AOR.
//!
//! The address-of-record is the user part of the To URI: Drongo serves one domain.
//!
//! A Contact with a `+sip.instance` (RFC 5626 §4.1, RFC 5627) names the phone behind it:
//! its binding is that instance's (with that `reg-id`, one per flow), so a phone that
//! registers again from a new address or port after a reconnect or a reboot (a new
//! Contact URI, often a new Call-ID) replaces its own binding instead of adding a second
//! one beside the stale one.
//!
//! The Path of a REGISTER (RFC 3327: the proxies between the phone and us, such as an
//! edge proxy that keeps its NAT binding open) is kept with its bindings: a call to them
//! goes through those proxies, in order, as preloaded Route headers.

use crate::config::RegistrarConfig;
use crate::deadline::DeadlineIndex;
use crate::message::{header_param, NameAddr, Request};
use crate::store::{reg_key, Key, StoreWrite, StoredRecord};
use crate::transaction::Peer;
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// One Contact bound to an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI.
    pub uri: String,
    /// q-value in thousandths (1000 when absent).
    pub q: u16,
    pub expires_at: UnixMillis,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (used when the Contact names no IP address).
    pub source: Peer,
    /// The Contact's `+sip.instance` (without its quotes) and `reg-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg_id: Option<u32>,
    /// The REGISTER's Path header values, in order (RFC 3327).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// The cluster member whose connection (TCP, TLS, WebSocket) the REGISTER came over,
    /// with no Path: the phone is reached through that flow alone (RFC 5626), so when
    /// that member is gone nobody can reach it, and the leader's watchdog removes the
    /// binding (the phone registers again over a new connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<u16>,
}

/// A binding as a 200 to a REGISTER lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub uri: String,
    /// Seconds left.
    pub expires: u64,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
}

impl Listed {
    /// The Contact header value: `<uri>;expires=N`, with the instance and reg-id the
    /// phone registered them with.
    pub fn contact(&self) -> String {
        let mut c = format!("<{}>;expires={}", self.uri, self.expires);
        if let Some(i) = &self.instance {
            c.push_str(&format!(";+sip.instance=\"{i}\""));
        }
        if let Some(r) = self.reg_id {
            c.push_str(&format!(";reg-id={r}"));
        }
        c
    }
}

/// The stored record of one address-of-record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressOfRecord {
    pub version: u64,
    pub bindings: Vec<Binding>,
}

impl AddressOfRecord {
    /// A stored `reg/` record's value, or `None` if it is not one.
    pub fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

/// What a REGISTER came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 200 OK listing these bindings; `write` must be durable first.
    Ok {
        contacts: Vec<Listed>,
        write: Option<StoreWrite>,
    },
    /// Refused with this status; `min_expires` is set for 423.
    Refused {
        code: u16,
        reason: &'static str,
        min_expires: Option<u32>,
    },
}

fn refuse(code: u16, reason: &'static str) -> RegisterOutcome {
    RegisterOutcome::Refused {
        code,
        reason,
        min_expires: None,
    }
}

/// All bindings of this node, with an index of their expirations.
#[derive(Debug, Default)]
pub struct Registrar {
    aors: BTreeMap<String, AddressOfRecord>,
    /// Each AOR's earliest binding expiry.
    expiries: DeadlineIndex<String>,
    /// Bindings whose removal after their expiry this registrar wrote (the watchdog).
    expired_removed: u64,
    /// AORs whose writes failed and whose record the runtime reads back: one entry per
    /// read-back to come, in order, each with whether a later write of the AOR was made
    /// meanwhile (the read-back, taken before that write landed, would then undo it: see
    /// [`Registrar::take_read_back`]).
    read_backs: BTreeMap<String, VecDeque<bool>>,
    /// Other regions' bindings (read-only copies their replicators keep in our store), by
    /// AOR and region: found by lookups, never changed by a REGISTER here.
    remote: BTreeMap<String, BTreeMap<String, Vec<Binding>>>,
    /// This cluster member's id, noted in the bindings whose flow it holds (`Binding::flow`).
    member: Option<u16>,
    /// Bindings removed because the member holding their flow was gone.
    flows_removed: u64,
}

/// The user part of a SIP URI, or `None`.
pub fn user_of(uri: &str) -> Option<String> {
    let u = rsip::Uri::try_from(uri).ok()?;
    u.user().map(str::to_string).filter(|s| !s.is_empty())
}

fn parse_q(q: Option<&str>) -> Option<u16> {
    let Some(q) = q else { return Some(1000) };
    let v: f64 = q.parse().ok()?;
    (0.0..=1.0)
        .contains(&v)
        .then(|| (v * 1000.0).round() as u16)
}

impl Registrar {
    /// The live bindings of `aor`, this region's and the other regions' copies, best first
    /// (highest q, then most recently refreshed).
    pub fn lookup(&self, aor: &str, now: UnixMillis) -> Vec<&Binding> {
        let remote = self.remote_bindings(aor);
        let mut b: Vec<&Binding> = self
            .aors
            .get(aor)
            .into_iter()
            .flat_map(|a| a.bindings.iter())
            .chain(remote)
            .filter(|b| b.expires_at > now)
            .collect();
        b.sort_by(|x, y| y.q.cmp(&x.q).then(y.expires_at.cmp(&x.expires_at)));
        b
    }

    /// Bindings whose removal after their expiry this registrar wrote.
    pub fn expired_removed(&self) -> u64 {
        self.expired_removed
    }

    /// Number of bindings held.
    pub fn binding_count(&self) -> usize {
        self.aors.values().map(|a| a.bindings.len()).sum()
    }

    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.expiries.next()
    }

    fn index(&mut self, aor: &str) {
        let first = self
            .aors
            .get(aor)
            .and_then(|rec| rec.bindings.iter().map(|b| b.expires_at).min());
        self.expiries.set(&aor.to_string(), first);
    }

    /// Stores `bindings` as the new state of `aor` and returns the write that persists it.
    /// A record created afresh starts at version `now` (not 1): once an AOR's record is
    /// deleted and made again, a stale copy elsewhere (another node's, or a write held up
    /// in the network) must not name the new record's version, or its compare-and-swap
    /// would succeed on a record it never saw.
    fn commit(&mut self, aor: &str, bindings: Vec<Binding>, now: UnixMillis) -> StoreWrite {
        let old_version = self.aors.get(aor).map(|a| a.version);
        let version = old_version.map_or(now.max(1), |v| v + 1);
        let write = if bindings.is_empty() {
            self.aors.remove(aor);
            StoreWrite::Delete {
                key: reg_key(aor),
                expect: old_version.unwrap_or(0),
            }
        } else {
            let rec = AddressOfRecord { version, bindings };
            let expires_at = rec.bindings.iter().map(|b| b.expires_at).max();
            let value = serde_json::to_vec(&rec).unwrap_or_default();
            self.aors.insert(aor.to_string(), rec);
            StoreWrite::Put {
                key: reg_key(aor),
                value,
                version,
                expect: old_version,
                expires_at,
            }
        };
        self.index(aor);
        for superseded in self.read_backs.get_mut(aor).into_iter().flatten() {
            *superseded = true;
        }
        write
    }

    /// Processes a REGISTER for `aor` (authentication already done), §10.3 steps 5–8.
    pub fn register(
        &mut self,
        aor: &str,
        req: &Request,
        source: Peer,
        now: UnixMillis,
        cfg: &RegistrarConfig,
    ) -> RegisterOutcome {
        let h = &req.headers;
        let call_id = h.get("Call-ID").unwrap_or("").to_string();
        let cseq = h
            .get("CSeq")
            .and_then(crate::message::CSeq::parse)
            .map_or(0, |c| c.seq);
        let header_expires = h.get("Expires").and_then(|e| e.parse::<u64>().ok());
        let path: Vec<String> = h.get_all("Path").map(str::to_string).collect();
        let flow = self
            .member
            .filter(|_| source.transport.is_reliable() && path.is_empty());
        let contacts: Vec<&str> = h.get_all("Contact").collect();
        let mut bindings: Vec<Binding> = self
            .aors
            .get(aor)
            .map(|a| a.bindings.clone())
            .unwrap_or_default();
        bindings.retain(|b| b.expires_at > now);
        let listing = |bs: &[Binding]| -> Vec<Listed> {
            bs.iter()
                .map(|b| Listed {
                    uri: b.uri.clone(),
                    expires: b.expires_at.saturating_sub(now).div_ceil(1000),
                    instance: b.instance.clone(),
                    reg_id: b.reg_id,
                })
                .collect()
        };

        if contacts.is_empty() {
            // A query lists the other regions' bindings too (a REGISTER that changes
            // anything lists what it wrote: this region's).
            let remote = self.remote_bindings(aor);
            let all: Vec<Binding> = bindings
                .iter()
                .chain(remote.filter(|b| b.expires_at > now))
                .cloned()
                .collect();
            return RegisterOutcome::Ok {
                contacts: listing(&all),
                write: None,
            };
        }
        if contacts.contains(&"*") {
            // §10.3 step 6: "*" only alone and with Expires: 0.
            if contacts.len() != 1 || header_expires != Some(0) {
                return refuse(400, "Invalid Wildcard Contact");
            }
            if bindings
                .iter()
                .any(|b| b.call_id == call_id && b.cseq >= cseq)
            {
                return refuse(500, "Out Of Order Request");
            }
            let write = self.commit(aor, Vec::new(), now);
            return RegisterOutcome::Ok {
                contacts: Vec::new(),
                write: Some(write),
            };
        }
        for c in contacts {
            let Some(na) = NameAddr::parse(c) else {
                return refuse(400, "Bad Contact");
            };
            let expires = na
                .param("expires")
                .and_then(|e| e.parse::<u64>().ok())
                .or(header_expires)
                .unwrap_or(u64::from(cfg.default_expires));
            if expires > 0 && expires < u64::from(cfg.min_expires) {
                return RegisterOutcome::Refused {
                    code: 423,
                    reason: "Interval Too Brief",
                    min_expires: Some(cfg.min_expires),
                };
            }
            let expires = expires.min(u64::from(cfg.max_expires));
            let Some(q) = parse_q(header_param(c, "q")) else {
                return refuse(400, "Bad q-value");
            };
            let instance = na
                .param("+sip.instance")
                .map(|v| v.trim_matches('"').to_string())
                .filter(|v| !v.is_empty());
            let reg_id = na.param("reg-id").and_then(|v| v.parse::<u32>().ok());
            // A phone's instance (and flow) names its binding; else the Contact URI does.
            let existing = match &instance {
                Some(i) => bindings
                    .iter()
                    .position(|b| b.instance.as_ref() == Some(i) && b.reg_id == reg_id),
                None => bindings
                    .iter()
                    .position(|b| b.instance.is_none() && b.uri.eq_ignore_ascii_case(&na.uri)),
            };
            if let Some(i) = existing {
                let b = &bindings[i];
                if b.call_id == call_id && b.cseq == cseq {
                    // This very request was applied already: a retransmission that no
                    // transaction absorbed (the node restarted between the write and the
                    // 200). It gets the 200 it should have had; the binding stays as
                    // written (§10.3 step 7 forbids an update on a CSeq not higher).
                    continue;
                }
                if b.call_id == call_id && b.cseq > cseq {
                    return refuse(500, "Out Of Order Request");
                }
                if expires == 0 {
                    bindings.remove(i);
                    continue;
                }
                bindings[i] = Binding {
                    uri: na.uri,
                    q,
                    expires_at: now + expires * 1000,
                    call_id: call_id.clone(),
                    cseq,
                    source,
                    instance,
                    reg_id,
                    path: path.clone(),
                    flow,
                };
            } else if expires > 0 {
                if bindings.len() >= cfg.max_bindings {
                    return refuse(503, "Too Many Registered Contacts");
                }
                bindings.push(Binding {
                    uri: na.uri,
                    q,
                    expires_at: now + expires * 1000,
                    call_id: call_id.clone(),
                    cseq,
                    source,
                    instance,
                    reg_id,
                    path: path.clone(),
                    flow,
                });
            }
        }
        let contacts = listing(&bindings);
        let write = self.commit(aor, bindings, now);
        RegisterOutcome::Ok {
            contacts,
            write: Some(write),
        }
    }

    /// Removes bindings that expired by `now`; returns the writes that persist it. In a
    /// cluster only the leader writes (`write`): the others' lookups skip an expired
    /// binding anyway, and their copy changes when the leader's write (or the store's
    /// own expiry of the record) reaches them through the watch. Writing from every node
    /// would only make the writes collide.
    pub fn handle_timeout(&mut self, now: UnixMillis, write: bool) -> Vec<StoreWrite> {
        let mut writes = Vec::new();
        while let Some(aor) = self.expiries.first_due(now).cloned() {
            if !write {
                self.expiries.set(&aor, None);
                continue;
            }
            let (removed, write) = self.prune(&aor, |b| b.expires_at > now, now);
            self.expired_removed += removed;
            writes.push(write);
        }
        writes
    }

    /// Keeps the bindings of `aor` that `keep` says to: how many went, and the write.
    fn prune(
        &mut self,
        aor: &str,
        keep: impl Fn(&Binding) -> bool,
        now: UnixMillis,
    ) -> (u64, StoreWrite) {
        let mut bindings = self
            .aors
            .get(aor)
            .map(|a| a.bindings.clone())
            .unwrap_or_default();
        let before = bindings.len();
        bindings.retain(keep);
        (
            (before - bindings.len()) as u64,
            self.commit(aor, bindings, now),
        )
    }

    /// This node is cluster member `id`: bindings registered over its connections name it.
    pub fn set_member(&mut self, id: u16) {
        self.member = Some(id);
    }

    /// Bindings removed because the member holding their flow was gone.
    pub fn flows_removed(&self) -> u64 {
        self.flows_removed
    }

    /// The leader's watchdog: removes every binding whose flow lived on a member not in
    /// `live`; returns the writes that persist it.
    pub fn remove_dead_flows(
        &mut self,
        live: &dyn Fn(u16) -> bool,
        now: UnixMillis,
    ) -> Vec<StoreWrite> {
        let dead: Vec<String> = self
            .aors
            .iter()
            .filter(|(_, a)| a.bindings.iter().any(|b| b.flow.is_some_and(|m| !live(m))))
            .map(|(aor, _)| aor.clone())
            .collect();
        let mut writes = Vec::new();
        for aor in dead {
            let (removed, write) = self.prune(&aor, |b| b.flow.is_none_or(live), now);
            self.flows_removed += removed;
            writes.push(write);
        }
        writes
    }

    /// A write of `aor` failed: its record will be read back.
    pub fn expect_read_back(&mut self, aor: &str) {
        self.read_backs
            .entry(aor.to_string())
            .or_default()
            .push_back(false);
    }

    /// Whether the read-back of `aor` is to be taken as the truth: not when the registrar
    /// wrote `aor` again after the failed write. The read may have been taken before that
    /// write landed (a REGISTER answered in between), so it could wipe a binding the
    /// store holds; the newer write settles the record instead (it fails, and is read
    /// back in turn, unless it was made on the truth). Several failed writes of one AOR
    /// are read back one by one (store-outage seed 472: the second of two read-backs,
    /// taken before a REGISTER's write landed, was taken for the truth and wiped the
    /// binding the REGISTER had just been answered 200 for).
    pub fn take_read_back(&mut self, aor: &str) -> bool {
        let Some(queue) = self.read_backs.get_mut(aor) else {
            return true;
        };
        let superseded = queue.pop_front().unwrap_or(false);
        if queue.is_empty() {
            self.read_backs.remove(aor);
        }
        !superseded
    }

    /// Drops the in-memory bindings of `aor` (the store holds none: what we had was never
    /// made durable).
    pub fn forget(&mut self, aor: &str) {
        self.aors.remove(aor);
        self.index(aor);
    }

    /// Indexes every AOR's expiry again: this node has become the cluster's leader, whose
    /// chore is to remove expired bindings (including those that expired while it was not).
    pub fn reindex_all(&mut self) {
        let aors: Vec<String> = self.aors.keys().cloned().collect();
        for aor in aors {
            self.index(&aor);
        }
    }

    /// A change of `aor`'s record that another node made (seen by the store's watch, or
    /// read because a lookup missed): a newer record is taken, a removal forgets the AOR.
    /// While a write of ours to it waits for the store (`pending`) a removal is left to
    /// that write's outcome (it fails and is read back, or it made the record anew).
    pub fn observe(&mut self, aor: &str, record: Option<&StoredRecord>, pending: bool) {
        match record {
            Some(r) => {
                let held = self.aors.get(aor).map(|a| a.version);
                if held.is_none_or(|v| r.version > v) {
                    self.restore(r);
                }
            }
            None if !pending => self.forget(aor),
            None => {}
        }
    }

    /// The other regions' bindings of `aor` (expired ones included).
    fn remote_bindings(&self, aor: &str) -> impl Iterator<Item = &Binding> {
        self.remote
            .get(aor)
            .into_iter()
            .flat_map(|r| r.values().flatten())
    }

    /// Region `region`'s copy of `aor`'s record changed (`None`: it is gone).
    pub fn observe_copy(&mut self, region: &str, aor: &str, record: Option<&StoredRecord>) {
        let rec = record.and_then(|r| AddressOfRecord::decode(&r.value));
        let copies = self.remote.entry(aor.to_string()).or_default();
        match rec {
            Some(rec) => {
                copies.insert(region.to_string(), rec.bindings);
            }
            None => {
                copies.remove(region);
            }
        }
        if copies.is_empty() {
            self.remote.remove(aor);
        }
    }

    /// Whether any record of `aor` is held (possibly with only expired bindings).
    pub fn holds(&self, aor: &str) -> bool {
        self.aors.contains_key(aor)
    }

    /// Loads a stored `reg/` record (after a restart, or from another node).
    pub fn restore(&mut self, record: &StoredRecord) {
        let Some(Key::Reg(aor)) = Key::parse(&record.key) else {
            return;
        };
        let Some(mut rec) = AddressOfRecord::decode(&record.value) else {
            return;
        };
        rec.version = record.version;
        self.aors.insert(aor.to_string(), rec);
        self.index(aor);
    }
}
