//! Calls and the store: loading stored calls after a restart, a call whose write failed,
//! and what the store really holds once read back.

use super::call::{Call, CallState};
use super::calls::Purpose;
use super::B2bua;
use crate::config::Transactions;
use crate::message::Response;
use crate::sink::Sink;
use crate::store::{StoreWrite, StoredRecord};
use crate::transaction::{Role, TxKey};
use crate::UnixMillis;

impl B2bua {
    /// Loads a stored call (after a restart) with its deadlines rebuilt from its fields;
    /// an `Ending` call sends its BYEs again. Another node's call is left alone.
    pub(crate) fn restore_call(&mut self, s: &mut Sink, r: &StoredRecord, now: UnixMillis) {
        if let Some(t) = super::tombstone::Tombstone::parse(&r.value) {
            if let Some((call_id, p, peer)) = t.owed_2xx.as_ref().filter(|_| t.owner == s.node_id) {
                // This node ended the call and owed the 2xx: it goes on retransmitting it.
                // (Another node's tombstone only answers requests: see `settle_ended`.)
                self.calls.resume_orphan(call_id, p, *peer, &s.cfg.timers);
            }
            return self.calls.remember_tombstone(&t);
        }
        let Ok(call) = serde_json::from_slice::<Call>(&r.value) else {
            return;
        };
        if call.owner != 0 && call.owner != s.node_id {
            // Another node's call: loaded only when a request for it comes (takeover).
            return;
        }
        self.load(s, call, r.version, now);
    }

    /// Runs a stored call from here: deadlines rebuilt from its fields, BYEs of an
    /// `Ending` call sent again (written first). Whether it wrote the record.
    pub(super) fn load(
        &mut self,
        s: &mut Sink,
        mut call: Call,
        version: u64,
        now: UnixMillis,
    ) -> bool {
        call.version = version;
        // A 2xx is stored as pending with the record written before it left; its ACK
        // costs no write, so the record goes on saying "pending" until the call's next
        // write. Within its 64·T1 window it is retransmitted (a caller that did ACK
        // acknowledges the copy again, §13.2.2.4); past the window the ACK is taken as
        // come, since a missing one would have ended the call.
        let timers = s.cfg.timers;
        call.pending_2xx = call.pending_2xx.filter(|p| now < p.gives_up_at(&timers));
        if let Some(p) = call.pending_2xx.as_mut() {
            // Its copies went on after the record was written: the schedule says how far
            // (a copy now would come early; tests/split_run.rs).
            let interval = |n| timers.capped(n);
            crate::transaction::lay_schedule(
                p.first_sent_at,
                now,
                interval,
                &mut p.retransmits,
                &mut p.last_sent_at,
            );
            if p.next_retransmit(&timers) >= p.gives_up_at(&timers) {
                // No copy left in its window: one goes now, or an ACK the old owner got
                // would never come again and the call would end at the window's close.
                p.last_sent_at = now.saturating_sub(timers.capped(p.retransmits));
            }
        }
        if call.pending_2xx.is_none() {
            call.awaiting_ack = None;
        }
        // Transactions died with the old process (they are not stored: see `Call`), but
        // for a ringing call's two INVITE transactions.
        let id = call.id.clone();
        let ending = call.byes.clone();
        call.bye_owed = !ending.is_empty();
        let ringing = matches!(call.state, CallState::Early | CallState::Cancelling);
        let mut txs = std::mem::take(&mut call.txs);
        let relayed = self.restore_relays(s, &mut call, &mut txs);
        if ringing {
            self.restore_ringing(s, &mut call, txs, now);
        }
        s.tx.restore(relayed, now);
        let (early, failed) = (
            call.state == CallState::Early,
            call.state == CallState::Cancelling,
        );
        self.calls.insert(call, &timers);
        if failed && self.settle_if_done(s, &id, now) {
            // Both its transactions were over (see `wind_down`).
            return true;
        }
        if early && s.cfg.cluster.transactions == Transactions::Local {
            // Its node died with its transactions' state as far as the plan's hybrid
            // goes: the caller hears so at once (never silence), the callee is cancelled.
            self.give_up_ringing(s, &id, 503, now);
            return true;
        }
        if ending.is_empty() {
            return false;
        }
        // Its BYEs may never have left the node that died: send them again (with a new
        // CSeq, which is stored first).
        self.send_byes(s, &id, &ending, now);
        self.persist(s, &id);
        true
    }

    /// The relays a record holds in progress (`distributed` transactions), kept where both
    /// their transactions are stored too; those transactions are taken out of `txs` and
    /// returned, for the caller to restore.
    fn restore_relays(
        &mut self,
        s: &Sink,
        call: &mut Call,
        txs: &mut Vec<crate::transaction::Snapshot>,
    ) -> Vec<crate::transaction::Snapshot> {
        type Relays = [(TxKey, super::Relay)];
        let of = |relays: &Relays, k: &TxKey| relays.iter().any(|(c, r)| c == k || r.server == *k);
        let relays = std::mem::take(&mut call.relays);
        let (mut relayed, rest): (Vec<_>, Vec<_>) = std::mem::take(txs)
            .into_iter()
            .partition(|t| of(&relays, &t.key));
        *txs = rest;
        if !super::stores_relays(s) {
            // Stored while transactions were distributed, run now by a node where they are
            // not: the relay dies with its node, as this node's own would.
            return Vec::new();
        }
        let has = |k: &TxKey| relayed.iter().any(|t| t.key == *k);
        let kept: Vec<_> = relays
            .into_iter()
            .filter(|(k, r)| has(k) && has(&r.server))
            .collect();
        relayed.retain(|t| of(&kept, &t.key));
        for (k, _) in &kept {
            self.calls.track_client(k.clone(), &call.id, Purpose::Relay);
        }
        call.relays = kept;
        relayed
    }

    /// A ringing call's INVITE transactions, restored from its record: the caller's server
    /// transaction and the client transaction towards the callee (which the call then
    /// tracks), every deadline rebuilt from their fields; one overdue fires now.
    fn restore_ringing(
        &mut self,
        s: &mut Sink,
        call: &mut Call,
        txs: Vec<crate::transaction::Snapshot>,
        now: UnixMillis,
    ) {
        for snap in &txs {
            let pair = Some((snap.key.clone(), snap.transaction.request().clone()));
            match snap.key.role {
                Role::Server => call.a_invite = pair,
                Role::Client => {
                    self.calls
                        .track_client(snap.key.clone(), &call.id, Purpose::Invite);
                    call.b_invite = pair;
                }
            }
        }
        s.tx.restore(txs, now);
    }

    /// The write of call `id`'s record failed, so what went with it was not sent; the
    /// call is ended. `withdrawn` are the 2xx responses to INVITEs taken back: a caller
    /// that never heard its answer gets an error response from the node, not a BYE.
    pub(crate) fn write_failed(
        &mut self,
        s: &mut Sink,
        id: &str,
        withdrawn: &[(TxKey, Response)],
        now: UnixMillis,
    ) {
        // Which version the store holds is unknown until the read-back, which deletes it
        // (see `read_back`).
        self.end_unsaved(s, id, 0, withdrawn, now);
    }

    /// Ends a call whose last write did not happen, writing on `version` (0: none).
    fn end_unsaved(
        &mut self,
        s: &mut Sink,
        id: &str,
        version: u64,
        withdrawn: &[(TxKey, Response)],
        now: UnixMillis,
    ) {
        if self
            .calls
            .get(id)
            .is_some_and(|c| matches!(c.state, CallState::Early | CallState::Cancelling))
        {
            return self.ringing_unsaved(s, id, version, now);
        }
        if let Some(call) = self.calls.get_mut(id) {
            call.version = version;
            call.bye_owed = true;
            let unanswered = call.pending_2xx.as_ref().is_some_and(|p| {
                let leg = call.dialog(p.side).call_id.as_str();
                withdrawn
                    .iter()
                    .any(|(_, r)| r.headers.get("Call-ID") == Some(leg))
            });
            // The 2xx never left: it is not retransmitted, and its sender gets an error
            // response from the node instead. The other party did answer (and its ACK was
            // lost with the batch, or waited for this 2xx's): it gets its ACK, then the
            // BYE. A caller that never heard its answer gets no BYE.
            if let Some(p) = call.pending_2xx.take_if(|_| unanswered) {
                let initial = call.answers_invite(&p);
                match (initial, call.awaiting_ack.take()) {
                    // A relayed re-INVITE's 2xx: the leg that answered gets our ACK.
                    (_, Some((_, _, sent_cseq))) => self.ack_other(s, id, p.side, sent_cseq),
                    (true, None) => {
                        call.a.remote_tag = None;
                        let b_cseq = call.b.local_cseq;
                        self.ack_b(s, id, b_cseq);
                    }
                    // A relayed 2xx whose ACK the call stopped waiting for when it ended.
                    _ => {}
                }
            }
        }
        self.end_call(s, id, now);
    }

    /// A ringing call whose write did not happen. Its first write held back the INVITE to
    /// the callee (whose transaction went with it): nothing of the call is out, and it is
    /// forgotten (the caller's retransmission starts it again). A later one: the call is
    /// given up (500 to the caller, a CANCEL to the callee once it rings).
    fn ringing_unsaved(&mut self, s: &mut Sink, id: &str, version: u64, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        call.version = version;
        let out = call
            .b_invite
            .as_ref()
            .is_some_and(|(k, _)| s.tx.get(k).is_some());
        if !out {
            // What the write may have created goes (the read-back of a failed key deletes
            // the rest; `Node::handle_store_record`).
            let owner = call.owner;
            for k in self.calls.forget(id) {
                s.tx.abandon(&k);
            }
            if s.clustered {
                s.writes.push(StoreWrite::Delete {
                    key: crate::store::call_key(id),
                    expect: 1,
                });
                s.writes.push(StoreWrite::Delete {
                    key: crate::store::owns_key(owner, id),
                    expect: 1,
                });
            }
            return;
        }
        self.give_up_ringing(s, id, 500, now);
        // A contested call had no timer meanwhile (store-leader-change-during-takeover
        // seed 134: given up already, it waited for a callee's answer it had ignored).
        self.calls.reschedule(id, &s.cfg.timers);
    }

    /// The write of call `id` lost its compare-and-swap: the record changed under us, and
    /// its owner may be another node now. Nothing more is sent for the call until the
    /// read-back says whose it is; the 2xx responses withdrawn with the write (taken out
    /// of `withdrawn`) wait with it.
    pub(crate) fn contest(&mut self, id: &str, withdrawn: &mut Vec<(TxKey, Response)>) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let legs = [call.a.call_id.clone(), call.b.call_id.clone()];
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(withdrawn).into_iter().partition(|(_, r)| {
                r.headers
                    .get("Call-ID")
                    .is_some_and(|c| legs.iter().any(|l| l == c))
            });
        *withdrawn = rest;
        self.calls.contest(id, mine);
    }

    /// What the store holds for call `id`, read back after a write to it failed. A call
    /// whose compare-and-swap lost is dropped without a word when the record names another
    /// owner (it runs the call now), and ended as after any failed write otherwise. A live
    /// call learns the version to write on; a record that outlived its call is deleted.
    pub(crate) fn read_back(
        &mut self,
        s: &mut Sink,
        key: &str,
        id: &str,
        record: Option<StoredRecord>,
        now: UnixMillis,
    ) {
        if let Some(withdrawn) = self.calls.uncontest(id) {
            let owner = record.as_ref().map_or(0, |r| owner_of(&r.value));
            if owner != 0 && owner != s.node_id {
                return self.drop_quietly(s, id, &withdrawn);
            }
            let version = record.map_or(0, |r| r.version);
            self.end_unsaved(s, id, version, &withdrawn, now);
            for (key, ok) in withdrawn {
                s.respond(&key, super::not_saved(&ok), now);
            }
            return;
        }
        match (self.calls.get_mut(id), record) {
            (Some(call), r) => call.version = r.map_or(0, |r| r.version),
            // Only a record of ours (this incarnation's) or nobody's: one another member
            // owns is its call, and one of an earlier incarnation of ours may be on its way
            // back to us (a rejoin loads each).
            (None, Some(r))
                if owned_here(&r.value, s)
                    && super::tombstone::Tombstone::parse(&r.value).is_none() =>
            {
                s.writes.push(StoreWrite::Delete {
                    key: key.to_string(),
                    expect: r.version,
                })
            }
            (None, Some(_)) => {}
            (None, None) => {}
        }
    }

    /// A swept record of call `id`: deleted when it is ours (any incarnation: an earlier
    /// one's leftovers included) or nobody's and no call of ours holds it (see
    /// `Node::handle_sweep`, which skips calls being loaded).
    pub(crate) fn sweep(&mut self, s: &mut Sink, id: &str, r: &StoredRecord) {
        let owner = owner_of(&r.value);
        let tombstone = super::tombstone::Tombstone::parse(&r.value).is_some();
        if tombstone || self.calls.get(id).is_some() || (owner != 0 && owner != s.node_id) {
            // (A tombstone goes by itself when it expires.)
            return;
        }
        s.metrics.records_swept += 1;
        s.writes.push(StoreWrite::Delete {
            key: r.key.clone(),
            expect: r.version,
        });
    }

    /// Another node owns call `id`: forget it with its transactions, sending nothing
    /// (no BYE, no error response, no retransmission) and writing nothing.
    pub(super) fn drop_quietly(&mut self, s: &mut Sink, id: &str, withdrawn: &[(TxKey, Response)]) {
        let mut keys = self.calls.forget(id);
        keys.extend(withdrawn.iter().map(|(k, _)| k.clone()));
        for k in keys {
            s.tx.abandon(&k);
        }
    }
}

#[derive(serde::Deserialize)]
struct Owner {
    #[serde(default)]
    owner: u16,
    #[serde(default)]
    owner_incarnation: u64,
}

/// The owner named in a stored call record (0: none, or not a call record). Reads only
/// that field, not the whole call.
pub fn owner_of(value: &[u8]) -> u16 {
    serde_json::from_slice::<Owner>(value).map_or(0, |o| o.owner)
}

/// The owner and its incarnation named in a stored call record ((0, 0): none).
pub fn owner_incarnation_of(value: &[u8]) -> (u16, u64) {
    serde_json::from_slice::<Owner>(value).map_or((0, 0), |o| (o.owner, o.owner_incarnation))
}

/// Whether a stored call record is nobody's or this node's in its current incarnation.
fn owned_here(value: &[u8], s: &Sink) -> bool {
    serde_json::from_slice::<Owner>(value).map_or(true, |o| {
        o.owner == 0 || (o.owner == s.node_id && o.owner_incarnation == s.incarnation)
    })
}
