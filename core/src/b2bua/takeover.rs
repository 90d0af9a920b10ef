//! Taking over a call another member ran (cluster): the call is loaded from its record,
//! stamped with this node and incarnation as its owner, and written back on the version
//! read. That write is the claim: a compare-and-swap, so when two nodes reach for one call
//! only one wins, and the loser drops it without a word (`contest`, `read_back`); the old
//! owner, if it still runs, loses its next write the same way.

use super::call::{Call, CallState};
use super::B2bua;
use crate::message::Method;
use crate::sink::Sink;
use crate::store::{owns_key, StoreWrite, StoredRecord};
use crate::transaction::TxKey;
use crate::UnixMillis;

/// The owner index entry of call `id` owned by `node` (created: it must not exist).
pub(crate) fn owns_entry(node: u16, id: &str) -> StoreWrite {
    StoreWrite::Put {
        key: owns_key(node, id),
        value: Vec::new(),
        version: 1,
        expect: None,
        expires_at: None,
    }
}

impl B2bua {
    /// Whether this node runs call `id`.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.calls.get(id).is_some()
    }

    /// Whether a call relays the request of server transaction `key` (restored with the
    /// call: see `Call::relays`). Asked only of requests that waited for a takeover.
    pub(crate) fn relays_request_of(&self, key: &TxKey) -> bool {
        self.calls
            .iter()
            .any(|c| c.relays.iter().any(|(_, r)| r.server == *key))
    }

    /// Answers that call's BYE retransmissions 200 until the tombstone's end.
    pub(crate) fn remember_tombstone(&mut self, t: &super::Tombstone) {
        self.calls.remember_tombstone(t);
    }

    /// Forgets call `id` without a word (a write of it was fenced).
    pub(crate) fn let_go(&mut self, s: &mut Sink, id: &str) {
        self.drop_quietly(s, id, &[]);
    }

    /// Forgets every call without a word (the node lost its lease: any of them may have
    /// been taken over meanwhile); returns their ids, to be loaded again.
    pub(crate) fn forget_all(&mut self, s: &mut Sink) -> Vec<String> {
        let ids: Vec<String> = self.calls.iter().map(|c| c.id.clone()).collect();
        for id in &ids {
            self.drop_quietly(s, id, &[]);
        }
        // And every transaction of theirs the calls no longer list (a BYE of a call that
        // was ending, a relayed request whose call failed its write): nothing the old
        // incarnation started may go on. Registrations are not calls; theirs stay.
        let stale: Vec<TxKey> =
            s.tx.iter()
                .map(|(k, _)| k)
                .filter(|k| k.method != Method::Register)
                .cloned()
                .collect();
        for k in &stale {
            s.tx.abandon(k);
        }
        ids
    }

    /// Takes over the stored call `r` (see the module doc); the Call-IDs of its two legs
    /// (requests on either may be waiting for it). `None` when the record is not a call
    /// this build can read.
    pub(crate) fn adopt(
        &mut self,
        s: &mut Sink,
        r: &StoredRecord,
        now: UnixMillis,
    ) -> Option<[String; 2]> {
        let mut call = serde_json::from_slice::<Call>(&r.value).ok()?;
        let legs = [call.a.call_id.clone(), call.b.call_id.clone()];
        if self.holds(&call.id) {
            return Some(legs);
        }
        let id = call.id.clone();
        let was = (call.owner, call.owner_incarnation);
        call.owner = s.node_id;
        call.owner_incarnation = s.incarnation;
        if was.0 != s.node_id {
            s.metrics.takeovers += 1;
            // The owner index moves with the call.
            s.writes.push(StoreWrite::Delete {
                key: owns_key(was.0, &id),
                expect: 1,
            });
            s.writes.push(owns_entry(s.node_id, &id));
        }
        // Nothing leaves for the call before the claim is known to have won
        // (hot-standby-takeover seed 314: a standby whose claim lost sent a 2xx copy), a
        // claim of its own call by a node back under a new incarnation included
        // (cluster-chaos seed 168: its restored INVITE went out beside the adopter's).
        s.claims.extend(legs.iter().cloned());
        s.metrics.calls_loaded += 1;
        if !self.load(s, call, r.version, now) {
            self.persist(s, &id);
        }
        if was.0 != s.node_id && s.cfg.cluster.outbound.is_none() {
            self.ack_answer_again(s, &id);
        }
        Some(legs)
    }

    /// The ACK for the callee's 2xx to the INVITE, sent again while that 2xx is in its
    /// window: it left the old owner in the batch after the write that confirmed the call,
    /// maybe not at all (the node died in between), and the callee's copies go where its
    /// INVITE came from, the dead node (only through an outbound balancer do they reach
    /// an adopter, which then ACKs each). One more ACK than the callee needs at worst: a
    /// UAC acknowledges every copy of a 2xx (§13.2.2.4), so a UAS takes ACKs again.
    fn ack_answer_again(&mut self, s: &mut Sink, id: &str) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let answering = call.state == CallState::Confirmed
            && call.awaiting_ack.is_none()
            && call
                .pending_2xx
                .as_ref()
                .is_some_and(|p| call.answers_invite(p));
        if answering {
            let b_cseq = call.b.local_cseq;
            self.ack_b(s, id, b_cseq);
        }
    }
}
