//! The node as a cluster member: the live members it is told of, and in-dialog requests
//! for calls it does not hold, which it loads from the store (any node serves any call).
//!
//! Such a request waits (its server transaction absorbs retransmissions) while the node
//! reads `call/{Call-ID}` (a request from the callee: the B-leg's Call-ID names the call)
//! and, when that is absent, `leg/{Call-ID}` (a request from the caller: the index names
//! the call), then the call. A call whose owner is no longer a live member is taken over
//! (`B2bua::adopt`: the claim is a compare-and-swap write that goes with the answer). One
//! whose owner lives is held (our member list may be late: a balancer reading the store
//! saw the owner go first) and read again if the owner leaves meanwhile; while held, it
//! is forwarded to the owner and answered with the owner's answer (`forward`). What is
//! still held after one lease TTL (64·T1 once forwarded) is let go without an answer: the
//! owner lives, and a 503 from here could be a second final response to one request. No
//! record gets 481.
//!
//! A member that leaves the list has its calls adopted even if nobody speaks on them (their
//! timers must still fire: 2xx retransmissions, session expiry, maximum duration, BYEs to
//! send again): every survivor reads the dead member's owner index (`owns/{id}/`) and loads
//! the calls that rendezvous hashing over the live members gives it, so the calls spread
//! over the survivors and each has exactly one adopter, agreed without talking. Draining
//! members are left out of the hashing (they are about to stop). Should an adopter die
//! before it loads its share, the leader's sweep takes what is left.

use super::parked::Park;
use super::Node;
use crate::config::Strategy;
use crate::message::{header_param, Method, Request};
use crate::store::{call_key, leg_key, owns_prefix, Key, StoreWrite, StoredRecord, OWNS_PREFIX};
use crate::transaction::{Peer, TxKey};
use crate::UnixMillis;
use std::collections::{BTreeMap, BTreeSet};

/// What the node knows of the cluster.
#[derive(Default)]
pub(super) struct Membership {
    /// Live members (id → incarnation); `None` on a single node.
    pub(super) members: Option<BTreeMap<u16, u64>>,
    /// Live members that are draining: alive (their calls stay theirs) but adopting
    /// nothing, so rendezvous hashing leaves them out.
    draining: BTreeSet<u16>,
    /// Requests waiting, by the Call-ID they carry.
    pub(super) waiting: super::parked::Parked,
    /// Waiting Call-IDs whose call's owner is alive in our view: held (owner, until when,
    /// the record's key) for one lease TTL in case our view is late, then let go unanswered.
    pub(super) held: BTreeMap<String, (u16, UnixMillis, String)>,
    /// Keys to read (for `Node::poll_load`), and the Call-IDs each read is for (one read
    /// may serve requests on both legs of a call).
    to_load: Vec<String>,
    loading: BTreeMap<String, BTreeSet<String>>,
    /// Keys read so far for each Call-ID (a `leg/` lookup follows a missing `call/`).
    tried: BTreeMap<String, BTreeSet<String>>,
    /// Owner index prefixes to scan (for `Node::poll_scan`): members that left.
    to_scan: Vec<String>,
    /// This node's term while it leads the cluster (it then runs the chores).
    pub(super) leader_term: Option<u64>,
    /// When each member that left was last seen going (the chore's grace).
    pub(super) gone_since: BTreeMap<u16, UnixMillis>,
    /// When each member was last in a member list (the failover histogram's start), and
    /// the newest incarnation of each seen in one.
    last_seen: BTreeMap<u16, UnixMillis>,
    pub(super) incarnations: BTreeMap<u16, u64>,
    /// Calls of dead members seen unadopted by the last sweep, with their versions.
    pub(super) orphans: BTreeMap<String, u64>,
    /// Calls the sweep is loading: their claim is the leader's chore, and is written
    /// fenced by its term.
    pub(super) swept: BTreeSet<String>,
    /// Each member's SIP address, as members reach it (requests for its calls are
    /// forwarded there).
    pub(super) addresses: BTreeMap<u16, std::net::SocketAddr>,
    /// Requests forwarded to their call's owner, awaiting its answer.
    pub(super) relays: super::forward::Relays,
    /// Responses for calls that may be another member's, waiting for the lookup.
    pub(super) strays: super::strays::Strays,
    /// Calls let go of because a write was fenced: loaded again at the next member list
    /// (after a rejoin, or once the lease holds again). Their records are left alone
    /// meanwhile.
    pub(super) suspended: BTreeSet<String>,
}

impl Node {
    /// The live members (id, incarnation), those of them draining, and this node's
    /// incarnation: the node is a cluster member from now on (the A-leg index is written,
    /// requests for calls it does not hold are loaded).
    ///
    /// A new incarnation while running means the node lost its lease and joined again:
    /// any of its calls may have been taken over meanwhile, so it forgets them all without
    /// a word and loads each again, taking back (as its new incarnation) those still its
    /// own or whose new owner is gone.
    pub fn handle_members(
        &mut self,
        now: UnixMillis,
        incarnation: u64,
        members: &[(u16, u64)],
        draining: &[u16],
    ) {
        self.now = now;
        self.cluster.draining = draining.iter().copied().collect();
        let rejoined = self.sink.incarnation != 0 && self.sink.incarnation != incarnation;
        self.sink.clustered = true;
        self.sink.incarnation = incarnation;
        let now_live: BTreeMap<u16, u64> = members.iter().copied().collect();
        let stored = self.sink.cfg.cluster.strategy != Strategy::None;
        // Members that left since the last list: their calls need adopters.
        if let Some(before) = self.cluster.members.as_ref().filter(|_| stored) {
            for id in before.keys().filter(|id| !now_live.contains_key(id)) {
                if *id != self.sink.node_id {
                    self.cluster.to_scan.push(owns_prefix(*id));
                    self.cluster.gone_since.insert(*id, now);
                }
            }
        }
        self.cluster
            .gone_since
            .retain(|id, _| !now_live.contains_key(id));
        for (id, inc) in &now_live {
            self.cluster.last_seen.insert(*id, now);
            let known = self.cluster.incarnations.entry(*id).or_default();
            *known = (*known).max(*inc);
        }
        // Requests held for an owner that has now left: their call again (below, once the
        // list is the new one).
        let left: Vec<(String, String)> = self
            .cluster
            .held
            .iter()
            .filter(|(_, (owner, _, _))| !now_live.contains_key(owner))
            .map(|(call_id, (_, _, key))| (call_id.clone(), key.clone()))
            .collect();
        for (call_id, _) in &left {
            self.cluster.held.remove(call_id);
            self.cluster.tried.remove(call_id);
        }
        self.cluster.members = Some(now_live);
        self.registrar.set_member(self.sink.node_id);
        for (call_id, key) in left {
            // From the standby's copy too (the failover test's standby read the store when
            // a request had come while the owner was still listed, and was held).
            self.take_up(&call_id, key, now);
        }
        // With nothing stored nobody else can have taken a call over: a node that joined
        // again keeps its calls (it was silent while its lease did not hold).
        if rejoined {
            // Their transactions are given up below (`forget_all`): requests parked for a
            // read are dropped with them, or a retransmission handled afresh would be
            // handled twice (cluster-chaos seed 705: two calls for one INVITE). A REGISTER
            // keeps its transaction, and its place.
            // The lookups' progress goes with them: a key noted as read would make a
            // retransmission's new lookup skip it (store-leader-change-during-takeover
            // seed 293: a held re-INVITE's retransmission got 481 after a rejoin).
            self.cluster.waiting.clear();
            self.cluster.relays.clear();
            self.cluster.strays.clear();
            self.cluster.held.clear();
            self.cluster.tried.clear();
            self.cluster.loading.clear();
            self.drop_parked_lookups();
        }
        if rejoined && stored {
            for id in self.b2bua.forget_all(&mut self.sink) {
                self.load(call_key(&id), &id);
            }
        }
        self.remove_dead_flows(now);
        for id in std::mem::take(&mut self.cluster.suspended) {
            if !self.b2bua.holds(&id) && !self.cluster.loading.values().any(|c| c.contains(&id)) {
                self.load(call_key(&id), &id);
            }
        }
        self.flush();
    }

    /// Each member's SIP address as members reach it (given with the member list): where
    /// requests for its calls are forwarded.
    pub fn handle_member_addresses(&mut self, addresses: &[(u16, std::net::SocketAddr)]) {
        self.cluster.addresses = addresses.iter().copied().collect();
    }

    /// The next store key to read for a waiting request; the runtime answers with
    /// [`Node::handle_loaded`].
    pub fn poll_load(&mut self) -> Option<String> {
        self.cluster.to_load.pop()
    }

    /// The next owner index prefix to scan (a member that left); the runtime answers with
    /// [`Node::handle_scanned`].
    pub fn poll_scan(&mut self) -> Option<String> {
        self.cluster.to_scan.pop()
    }

    /// The owner index entries under `prefix` (`None`: the store did not answer; the scan
    /// is asked for again). The calls rendezvous hashing gives this node are loaded and
    /// adopted (unless their owner is back).
    pub fn handle_scanned(
        &mut self,
        now: UnixMillis,
        prefix: &str,
        records: Option<Vec<StoredRecord>>,
    ) {
        self.now = now;
        let Some(records) = records else {
            self.cluster.to_scan.push(prefix.to_string());
            return;
        };
        let live = self.adopters();
        let me = self.sink.node_id;
        for r in records {
            let Some(call) = r
                .key
                .strip_prefix(OWNS_PREFIX)
                .and_then(|rest| rest.split_once('/'))
                .map(|(_, call)| call.to_string())
            else {
                continue;
            };
            let mine = crate::cluster::choose(&call, &live) == Some(me);
            if mine && !self.b2bua.holds(&call) && !self.cluster.waiting.contains(&call) {
                self.sink.metrics.adoptions += 1;
                self.take_up(&call, call_key(&call), now);
            }
        }
    }

    /// Calls being read from the store or let go of after a fenced write: a sweep or a
    /// read-back leaves their records alone.
    pub(super) fn loading_calls(&self) -> BTreeSet<String> {
        self.cluster
            .loading
            .values()
            .flatten()
            .chain(self.cluster.waiting.names())
            .chain(&self.cluster.suspended)
            .cloned()
            .collect()
    }

    /// The members that adopt calls (weight 1 each): the live ones but those draining, this
    /// node included once it drains itself (before its record says so).
    pub(super) fn adopters(&self) -> Vec<(u16, u32)> {
        let me = self.sink.node_id;
        self.cluster
            .members
            .iter()
            .flat_map(BTreeMap::keys)
            .filter(|id| !(self.cluster.draining.contains(id) || (**id == me && self.draining)))
            .map(|id| (*id, 1))
            .collect()
    }

    pub(super) fn is_clustered(&self) -> bool {
        self.cluster.members.is_some()
    }

    /// An in-dialog request for a call this node does not hold.
    pub(super) fn await_call(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        if self.sink.cfg.cluster.strategy == Strategy::None {
            // Calls are not stored: one this node does not hold is not to be had.
            return self.sink.reply(&key, &req, 481, None, &[], now);
        }
        let call_id = req.headers.get("Call-ID").unwrap_or("").to_string();
        match self.cluster.waiting.park(&call_id, (key, req, from)) {
            Park::First => {}
            Park::Joined => return self.forward_held(&call_id),
            Park::Full(entry) => {
                let (key, req, _) = *entry;
                let h = [("Retry-After", "1".to_string())];
                return self.sink.reply(&key, &req, 503, None, &h, now);
            }
        }
        match self.standby_record(&call_id) {
            Some((_, r)) => self.take_or_refuse(&call_id, &r, now, true),
            None => self.load(call_key(&call_id), &call_id),
        }
    }

    /// Call `call_id` taken over for what waits under that name: a hot standby takes it
    /// from its copy, reading nothing (a batch of its own, as a takeover after a read has);
    /// any other member reads `key` first.
    fn take_up(&mut self, call_id: &str, key: String, now: UnixMillis) {
        match self.standby_record(call_id) {
            Some((_, r)) => {
                self.take_or_refuse(call_id, &r, now, true);
                self.flush();
            }
            None => self.load(key, call_id),
        }
    }

    pub(super) fn load(&mut self, key: String, call_id: &str) {
        self.cluster
            .tried
            .entry(call_id.to_string())
            .or_default()
            .insert(key.clone());
        // Requests on both legs of one call can wait for the same record: one read, and
        // its answer goes to each.
        let waiters = self.cluster.loading.entry(key.clone()).or_default();
        if waiters.is_empty() {
            self.cluster.to_load.push(key);
        }
        waiters.insert(call_id.to_string());
    }

    /// Asks the runtime to read `key` (answered through [`Node::handle_loaded`]).
    pub(super) fn queue_load(&mut self, key: String) {
        if !self.cluster.to_load.contains(&key) {
            self.cluster.to_load.push(key);
        }
    }

    /// What the store holds at `key`, read for waiting requests (`None`: the store could
    /// not answer; they get 503).
    pub fn handle_loaded(
        &mut self,
        now: UnixMillis,
        key: &str,
        record: Option<Option<StoredRecord>>,
    ) {
        self.now = now;
        if let Some(Key::Reg(aor)) = Key::parse(key) {
            self.binding_loaded(aor, record, now);
            return self.flush();
        }
        let Some(waiters) = self.cluster.loading.remove(key) else {
            return;
        };
        let record = record.map(|r| r.filter(|r| r.is_live(now)));
        for call_id in waiters {
            self.loaded_for(&call_id, key, record.clone(), now);
        }
        self.flush();
    }

    /// The read of `key` answered, for the requests waiting under `call_id`.
    fn loaded_for(
        &mut self,
        call_id: &str,
        key: &str,
        record: Option<Option<StoredRecord>>,
        now: UnixMillis,
    ) {
        let call_id = call_id.to_string();
        let Some(record) = record else {
            return self.settle_waiting(&call_id, 503, now);
        };
        let tried = |k: &str| {
            self.cluster
                .tried
                .get(&call_id)
                .is_some_and(|t| t.contains(k))
        };
        match (Key::parse(key), record) {
            (Some(Key::Call(_)), None) => {
                let leg = leg_key(&call_id);
                if tried(&leg) {
                    self.settle_waiting(&call_id, 481, now);
                } else {
                    self.load(leg, &call_id);
                }
            }
            (Some(Key::Leg(_)), Some(r)) => match std::str::from_utf8(&r.value) {
                Ok(id) if !tried(&call_key(id)) => self.load(call_key(id), &call_id),
                _ => self.settle_waiting(&call_id, 481, now),
            },
            (Some(Key::Call(_)), Some(r)) => self.take_or_refuse(&call_id, &r, now, false),
            _ => self.settle_waiting(&call_id, 481, now),
        }
    }

    /// Whether the owner a call record names is alive: in our member list, or absent from
    /// it but naming an incarnation newer than any we saw of it (it started again and
    /// claimed the call after our list was made; the list is refreshed every third of the
    /// TTL).
    pub(super) fn owner_alive(&self, value: &[u8]) -> bool {
        let (owner, incarnation) = crate::b2bua::owner_incarnation_of(value);
        let rejoined = self
            .cluster
            .incarnations
            .get(&owner)
            .is_some_and(|known| incarnation > *known);
        rejoined
            || self
                .cluster
                .members
                .as_ref()
                .is_some_and(|m| m.contains_key(&owner))
    }

    /// Takes the call of record `r` over if its owner is gone (`from_copy`: `r` is the
    /// standby's copy, not a read), for the requests waiting under `call_id`.
    fn take_or_refuse(
        &mut self,
        call_id: &str,
        r: &StoredRecord,
        now: UnixMillis,
        from_copy: bool,
    ) {
        if let Some(t) = crate::b2bua::Tombstone::parse(&r.value) {
            return self.settle_ended(call_id, &t, now);
        }
        let owner = crate::b2bua::owner_of(&r.value);
        let alive = self.owner_alive(&r.value);
        if owner != self.sink.node_id && owner != 0 && alive {
            // Alive in our view, which lags the store by up to a third of the TTL: a
            // balancer that saw the owner's lease end first sends its calls here. Hold the
            // requests until the owner leaves our list too (then read again) or one TTL
            // has passed (then they go unanswered: the owner lives, and answers the
            // retransmissions a balancer sends it); meanwhile those that may be are
            // forwarded to the owner (`forward`), and held until it answers (at most
            // 64·T1, a non-INVITE transaction's life).
            if !self.cluster.held.contains_key(call_id) {
                let until = now + self.sink.cfg.cluster.lease_ttl_ms;
                self.cluster
                    .held
                    .insert(call_id.to_string(), (owner, until, r.key.clone()));
            }
            return self.forward_held(call_id);
        }
        // Held here already, the call did not have the dialogs the waiting requests name
        // when they came: they get 481 unless it has them now (a request of this node's
        // own looped back to it looked the call up again and again: lb-node-crash-under-load
        // seed 69, 8,480 reads of one record).
        let held = matches!(Key::parse(&r.key), Some(Key::Call(id)) if self.b2bua.holds(id));
        let chore = self.cluster.swept.remove(call_id);
        let from = self.sink.writes.len();
        let adopted = self.b2bua.adopt(&mut self.sink, r, now);
        if let Some(term) = self.cluster.leader_term.filter(|_| chore) {
            let claim: Vec<StoreWrite> = self.sink.writes.drain(from..).collect();
            let fenced = claim.into_iter().map(|w| w.fenced(term));
            self.sink.writes.extend(fenced);
        }
        match adopted {
            Some(legs) => {
                // What its restored transactions say at once (a Timer B already past) is
                // handled now, at the takeover's time.
                self.process_events(now);
                self.sink.metrics.standby_takeovers += u64::from(from_copy);
                let since = self.cluster.last_seen.get(&owner);
                if let Some(t) = since.filter(|_| owner != self.sink.node_id) {
                    self.sink
                        .metrics
                        .failover_ms
                        .observe(now.saturating_sub(*t));
                }
                for leg in legs.iter().map(String::as_str).chain([call_id]) {
                    self.replay_waiting(leg, now, !held);
                }
            }
            None => self.settle_waiting(call_id, 481, now),
        }
    }

    /// The requests waiting under `call_id` (none left there, nor relays for them).
    fn take_waiting(&mut self, call_id: &str) -> Vec<super::parked::Entry> {
        // Responses waiting with them are dropped (see `strays`).
        self.cluster.strays.take(call_id);
        let entries = self.cluster.waiting.take(call_id);
        for (key, _, _) in &entries {
            self.cluster.relays.remove(key);
        }
        entries
    }

    /// The call is held now: the waiting requests go to it (`look_again`: those that find
    /// none of its dialogs may look it up again; else they get 481).
    fn replay_waiting(&mut self, call_id: &str, now: UnixMillis, look_again: bool) {
        self.forget_lookups(call_id);
        self.replay_strays(call_id, now);
        for (key, req, from) in self.take_waiting(call_id) {
            if req.method == Method::Cancel {
                // Its INVITE's transaction is here now, or nowhere: no second lookup.
                self.b2bua.on_cancel(&mut self.sink, &key, &req, now);
                continue;
            }
            let tag = req.headers.get("To").and_then(|t| header_param(t, "tag"));
            let known = tag.is_some_and(|t| self.b2bua.dialog_of(call_id, t).is_some());
            if !look_again && !known {
                self.sink.reply(&key, &req, 481, None, &[], now);
                continue;
            }
            if self.b2bua.relays_request_of(&key) {
                // A retransmission of a request the call was relaying when it was stored:
                // its restored transaction (which took the place of the one made for it
                // here) answers it as a copy, as it would have on the old owner.
                let msg = crate::message::SipMessage::Request(req);
                self.sink.tx.handle_message(msg, from, now);
                continue;
            }
            self.on_request(key, req, from, now);
        }
    }

    /// The call ended (a tombstone): a BYE of one of its dialogs is the retransmission of
    /// one it owes a 200, a re-INVITE whose 2xx was still owed gets that 2xx; anything
    /// else gets 481.
    fn settle_ended(&mut self, call_id: &str, t: &crate::b2bua::Tombstone, now: UnixMillis) {
        self.b2bua.remember_tombstone(t);
        self.forget_lookups(call_id);
        for (key, req, _) in self.take_waiting(call_id) {
            let h = &req.headers;
            let tag = h.get("To").and_then(|v| header_param(v, "tag"));
            let call_id = h.get("Call-ID").unwrap_or("");
            let cseq = crate::b2bua::cseq_of(&req);
            if let Some(ok) = t
                .owed_2xx(call_id, cseq)
                .filter(|_| req.method == Method::Invite)
            {
                // The 2xx this re-INVITE was answered before the call ended.
                self.sink.respond_copy(&key, ok.clone(), &req, now);
                continue;
            }
            let owed = req.method == Method::Bye && t.owes(call_id, tag.unwrap_or(""));
            let code = if owed { 200 } else { 481 };
            self.sink.reply(&key, &req, code, None, &[], now);
        }
    }

    /// The waiting requests get `code` (481: no such call; 503: try again).
    fn settle_waiting(&mut self, call_id: &str, code: u16, now: UnixMillis) {
        self.forget_lookups(call_id);
        for (key, req, _) in self.take_waiting(call_id) {
            let h: Vec<(&str, String)> = if code == 503 {
                vec![("Retry-After", "1".to_string())]
            } else {
                Vec::new()
            };
            self.sink.reply(&key, &req, code, None, &h, now);
        }
    }

    /// When the first held request is due to be let go.
    pub(super) fn held_deadline(&self) -> Option<UnixMillis> {
        self.cluster.held.values().map(|(_, until, _)| *until).min()
    }

    /// Held requests whose owner still lives after one TTL are let go without an answer.
    pub(super) fn release_held(&mut self, now: UnixMillis) {
        let due: Vec<String> = self
            .cluster
            .held
            .iter()
            .filter(|(_, (_, until, _))| *until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.forget_lookups(&id);
            for (key, req, _) in self.take_waiting(&id) {
                // No answer: a balancer sends the retransmission to whoever serves the
                // call; a 503 here would be a second final response to a request the
                // owner answered through another member (lb-node-crash-under-load
                // seed 137).
                self.sink.tx.abandon(&key);
                self.sink.diagnostics.push_back(format!(
                    "{} in {id} not answered: its owner lives elsewhere",
                    req.method
                ));
            }
        }
    }

    pub(super) fn forget_lookups(&mut self, call_id: &str) {
        self.cluster.held.remove(call_id);
        self.cluster.tried.remove(call_id);
        for waiters in self.cluster.loading.values_mut() {
            waiters.remove(call_id);
        }
        self.cluster.loading.retain(|_, w| !w.is_empty());
    }
}
