//! The call table: every call of the node and every index that leads to one (its two
//! dialogs, the transactions it runs, its next deadline), kept in step in one place.
//! Also the 2xx responses of calls that ended before their ACK came (§13.3.1.4 wants them
//! retransmitted until the ACK or 64·T1 all the same).

use super::call::{Call, Pending2xx, Side};
use crate::deadline::DeadlineIndex;
use crate::map::HashMap;
use crate::message::Response;
use crate::transaction::{Peer, TimerConfig, TxKey};
use crate::UnixMillis;
use std::collections::BTreeMap;

/// What a client transaction of ours is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The INVITE to the callee.
    Invite,
    /// An in-dialog request relayed from the other leg.
    Relay,
    /// BYE, CANCEL: answers change nothing.
    Fire,
    /// The BYE that ends the call on this leg: its answer (or timeout) lets the record go.
    Bye(Side),
}

/// A 2xx of an ended call, keyed by its leg's Call-ID and CSeq.
type OrphanKey = (String, u32);

/// Hash maps here are only looked up, never iterated, so they decide no output order.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    calls: BTreeMap<String, Call>,
    /// (Call-ID, local tag) of each leg → (call id, side).
    dialogs: HashMap<(String, String), (String, Side)>,
    client_txs: HashMap<TxKey, (String, Purpose)>,
    /// The caller's INVITE server transaction → call id (for CANCEL), until answered.
    server_invites: HashMap<TxKey, String>,
    timers: DeadlineIndex<String>,
    orphans: BTreeMap<OrphanKey, (Pending2xx, Peer)>,
    orphan_timers: DeadlineIndex<OrphanKey>,
    /// Calls whose write lost its compare-and-swap, with the 2xx responses withdrawn with
    /// it, until the read-back says whose the call is.
    contested: BTreeMap<String, Vec<(TxKey, Response)>>,
    /// Dialogs of calls that ended after a failed write, until 64·T1 after: a party whose
    /// BYE lost its 200 with that write goes on retransmitting it, and is told 200 (the
    /// dialog is over, as it asked), not 481.
    ended: DeadlineIndex<(String, String)>,
}

impl Calls {
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Call> {
        self.calls.get_mut(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Adds a call with the indexes of its dialogs and of the caller's INVITE, and its
    /// deadline.
    pub(crate) fn insert(&mut self, call: Call, t: &TimerConfig) {
        for side in [Side::A, Side::B] {
            let d = call.dialog(side);
            self.dialogs.insert(
                (d.call_id.clone(), d.local_tag.clone()),
                (call.id.clone(), side),
            );
        }
        if let Some((k, _)) = &call.a_invite {
            self.server_invites.insert(k.clone(), call.id.clone());
        }
        let id = call.id.clone();
        self.calls.insert(id.clone(), call);
        self.reschedule(&id, t);
    }

    /// Takes a call out with every index of it. A 2xx it still retransmits goes on as an
    /// orphan until its ACK or 64·T1.
    pub(crate) fn remove(&mut self, id: &str, t: &TimerConfig) -> Option<Call> {
        let call = self.take(id)?;
        if let Some(p) = &call.pending_2xx {
            let leg = call.dialog(p.side);
            let key = (leg.call_id.clone(), p.cseq);
            self.orphan_timers.set(&key, Some(orphan_deadline(p, t)));
            self.orphans
                .insert(key, (p.clone(), p.destination(leg.peer)));
        }
        Some(call)
    }

    /// Keeps the dialogs of `call`, which ended after a failed write, until `until`
    /// (and forgets those kept past their time).
    pub(crate) fn remember_ended(&mut self, call: &Call, until: UnixMillis, now: UnixMillis) {
        while let Some(k) = self.ended.first_due(now).cloned() {
            self.ended.remove(&k);
        }
        for side in [Side::A, Side::B] {
            let d = call.dialog(side);
            self.ended
                .set(&(d.call_id.clone(), d.local_tag.clone()), Some(until));
        }
    }

    /// Keeps the dialogs of a stored tombstone until its end.
    pub(crate) fn remember_tombstone(&mut self, t: &super::tombstone::Tombstone) {
        for d in &t.dialogs {
            self.ended.set(d, Some(t.until));
        }
    }

    /// Goes on retransmitting the 2xx a stored tombstone says its call still owed (a node
    /// restarted after its call ended): as an orphan, until its ACK or 64·T1.
    pub(crate) fn resume_orphan(
        &mut self,
        call_id: &str,
        p: &Pending2xx,
        peer: Peer,
        t: &TimerConfig,
    ) {
        let key = (call_id.to_string(), p.cseq);
        self.orphan_timers.set(&key, Some(orphan_deadline(p, t)));
        self.orphans.insert(key, (p.clone(), peer));
    }

    /// Whether (Call-ID, local tag) is a dialog kept by `remember_ended` at `now`.
    pub(crate) fn was_ended(&self, call_id: &str, local_tag: &str, now: UnixMillis) -> bool {
        self.ended
            .get(&(call_id.to_string(), local_tag.to_string()))
            .is_some_and(|until| now < until)
    }

    fn take(&mut self, id: &str) -> Option<Call> {
        let call = self.calls.remove(id)?;
        self.timers.remove(&id.to_string());
        self.contested.remove(id);
        for side in [Side::A, Side::B] {
            let d = call.dialog(side);
            self.dialogs
                .remove(&(d.call_id.clone(), d.local_tag.clone()));
        }
        if let Some((k, _)) = &call.a_invite {
            self.server_invites.remove(k);
        }
        Some(call)
    }

    /// Takes a call out with every index of it, leaving nothing behind (no orphaned 2xx):
    /// another node runs it now. Returns the keys of its transactions, in a fixed order,
    /// for the caller to abandon.
    pub(crate) fn forget(&mut self, id: &str) -> Vec<TxKey> {
        let mut keys: Vec<TxKey> = self
            .client_txs
            .iter()
            .filter(|(_, (c, _))| c == id)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_by(|a, b| (&a.branch, &a.sent_by).cmp(&(&b.branch, &b.sent_by)));
        for k in &keys {
            self.client_txs.remove(k);
        }
        if let Some(call) = self.take(id) {
            keys.extend(call.a_invite.map(|(k, _)| k));
            // The requests it was relaying get their answers from the new owner.
            keys.extend(call.relays.into_iter().map(|(_, r)| r.server));
        }
        keys
    }

    /// A call whose write lost its compare-and-swap waits for its read-back.
    pub(crate) fn contest(&mut self, id: &str, withdrawn: Vec<(TxKey, Response)>) {
        if !self.calls.contains_key(id) {
            return;
        }
        self.contested
            .entry(id.to_string())
            .or_default()
            .extend(withdrawn);
        self.timers.remove(&id.to_string());
    }

    /// The read-back of a contested call came: what waited with it.
    pub(crate) fn uncontest(&mut self, id: &str) -> Option<Vec<(TxKey, Response)>> {
        self.contested.remove(id)
    }

    /// Whether call `id` waits for its read-back (nothing is sent for it meanwhile).
    pub(crate) fn is_contested(&self, id: &str) -> bool {
        self.contested.contains_key(id)
    }

    /// Whether a leg with Call-ID `call_id` belongs to a call that waits for its read-back.
    pub(crate) fn is_contested_leg(&self, call_id: &str) -> bool {
        self.contested
            .keys()
            .any(|id| id == call_id || self.calls.get(id).is_some_and(|c| c.a.call_id == call_id))
    }

    /// Re-derives the call's deadline from its fields (none while it is contested).
    pub(crate) fn reschedule(&mut self, id: &str, t: &TimerConfig) {
        let at = self
            .calls
            .get(id)
            .filter(|_| !self.contested.contains_key(id))
            .and_then(|c| c.deadline(t))
            .map(|(at, _)| at);
        self.timers.set(&id.to_string(), at);
    }

    /// The call and side a dialog (Call-ID, our tag) belongs to.
    pub(crate) fn by_dialog(&self, call_id: &str, local_tag: &str) -> Option<(String, Side)> {
        self.dialogs
            .get(&(call_id.to_string(), local_tag.to_string()))
            .cloned()
    }

    /// The call ringing through the caller's INVITE server transaction `key`.
    pub(crate) fn by_server_invite(&self, key: &TxKey) -> Option<String> {
        self.server_invites.get(key).cloned()
    }

    /// The caller's INVITE was answered: a CANCEL no longer finds the call.
    pub(crate) fn answered(&mut self, key: &TxKey) {
        self.server_invites.remove(key);
    }

    pub(crate) fn track_client(&mut self, key: TxKey, id: &str, purpose: Purpose) {
        self.client_txs.insert(key, (id.to_string(), purpose));
    }

    pub(crate) fn by_client(&self, key: &TxKey) -> Option<(String, Purpose)> {
        self.client_txs.get(key).cloned()
    }

    /// Transaction `key` is over.
    pub(crate) fn transaction_ended(&mut self, key: &TxKey) {
        self.client_txs.remove(key);
        self.server_invites.remove(key);
    }

    /// The earliest deadline of a call or an orphaned 2xx.
    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        [self.timers.next(), self.orphan_timers.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The call whose timer is due first, if any is due at `now`.
    pub(crate) fn first_due(&self, now: UnixMillis) -> Option<String> {
        self.timers.first_due(now).cloned()
    }

    pub(crate) fn has_orphans(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// An ACK for an orphaned 2xx: it stops. `true` if there was one.
    pub(crate) fn ack_orphan(&mut self, call_id: &str, cseq: u32) -> bool {
        let key = (call_id.to_string(), cseq);
        self.orphan_timers.remove(&key);
        self.orphans.remove(&key).is_some()
    }

    /// The 2xx of an ended call that INVITE (Call-ID, CSeq) was answered, while it is still
    /// retransmitted: a retransmission of that INVITE gets it again.
    pub(crate) fn orphan_2xx(&self, call_id: &str, cseq: u32) -> Option<&Response> {
        self.orphans
            .get(&(call_id.to_string(), cseq))
            .map(|(p, _)| &p.response)
    }

    /// The orphaned 2xx of INVITE (Call-ID, CSeq) went out at `now` to answer a copy of
    /// that INVITE: its next retransmission counts from then (lb-two-balancers seed 199:
    /// one came 32 ms after such an answer).
    pub(crate) fn orphan_copied(
        &mut self,
        call_id: &str,
        cseq: u32,
        now: UnixMillis,
        t: &TimerConfig,
    ) {
        let key = (call_id.to_string(), cseq);
        if let Some((p, _)) = self.orphans.get_mut(&key) {
            p.retransmits += 1;
            p.last_sent_at = now;
            let at = orphan_deadline(p, t);
            self.orphan_timers.set(&key, Some(at));
        }
    }

    /// The orphaned 2xx responses due for retransmission at `now`, in key order; those past
    /// 64·T1 are dropped.
    pub(crate) fn due_orphans(
        &mut self,
        now: UnixMillis,
        t: &TimerConfig,
    ) -> Vec<(Pending2xx, Peer)> {
        let mut due: Vec<OrphanKey> = self.orphan_timers.due(now).cloned().collect();
        due.sort();
        let mut out = Vec::new();
        for key in due {
            let Some((p, peer)) = self.orphans.get_mut(&key) else {
                self.orphan_timers.remove(&key);
                continue;
            };
            if now >= p.gives_up_at(t) {
                self.orphans.remove(&key);
                self.orphan_timers.remove(&key);
                continue;
            }
            p.retransmits += 1;
            p.last_sent_at = now;
            out.push((p.clone(), *peer));
            let at = orphan_deadline(p, t);
            self.orphan_timers.set(&key, Some(at));
        }
        out
    }
}

fn orphan_deadline(p: &Pending2xx, t: &TimerConfig) -> UnixMillis {
    p.next_retransmit(t).min(p.gives_up_at(t))
}
