//! Calls and the store: loading stored calls after a restart, a call whose write failed,
//! and what the store really holds once read back.

use super::call::{Call, Side};
use super::B2bua;
use crate::message::Response;
use crate::sink::Sink;
use crate::store::{StoreWrite, StoredRecord};
use crate::transaction::TxKey;
use crate::UnixMillis;

impl B2bua {
    /// Loads a stored call (after a restart) with its deadlines rebuilt from its fields;
    /// an `Ending` call sends its BYEs again. Another node's call is left alone.
    pub(crate) fn restore_call(&mut self, s: &mut Sink, r: &StoredRecord, now: UnixMillis) {
        let Ok(mut call) = serde_json::from_slice::<Call>(&r.value) else {
            return;
        };
        if call.owner != 0 && call.owner != s.node_id {
            // Another node's call: not ours to run until takeover exists.
            return;
        }
        call.version = r.version;
        // A 2xx is stored as pending with the record written before it left; its ACK
        // costs no write, so the record goes on saying "pending" until the call's next
        // write. Within its 64·T1 window it is retransmitted (a caller that did ACK
        // acknowledges the copy again, §13.2.2.4); past the window the ACK is taken as
        // come, since a missing one would have ended the call.
        let timers = s.cfg.timers;
        call.pending_2xx = call.pending_2xx.filter(|p| now < p.gives_up_at(&timers));
        if call.pending_2xx.is_none() {
            call.awaiting_ack = None;
        }
        // Transactions died with the old process.
        call.a_invite = None;
        call.b_invite = None;
        call.relays.clear();
        let id = call.id.clone();
        let ending = call.byes.clone();
        self.calls.insert(call, &timers);
        if !ending.is_empty() {
            // Its BYEs may never have left the node that died: send them again (with a
            // new CSeq, which is stored first).
            self.send_byes(s, &id, &ending, now);
            self.persist(s, &id);
        }
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
        if let Some(call) = self.calls.get_mut(id) {
            // Which version the store holds is unknown until the read-back, which deletes
            // it (see `read_back`).
            call.version = 0;
            let unanswered = call.pending_2xx.as_ref().is_some_and(|p| {
                p.side == Side::A
                    && withdrawn
                        .iter()
                        .any(|(_, r)| r.headers.get("Call-ID") == Some(call.a.call_id.as_str()))
            });
            if unanswered {
                // The callee did answer (and its ACK was lost with the batch): it gets its
                // ACK again, then the BYE.
                call.pending_2xx = None;
                call.a.remote_tag = None;
                let b_cseq = call.b.local_cseq;
                self.ack_b(s, id, b_cseq);
            }
        }
        self.end_call(s, id, now);
    }

    /// What the store holds for call `id`, read back after a write to it failed: a record
    /// that outlived its call is deleted; a live call learns the version to write on.
    pub(crate) fn read_back(
        &mut self,
        s: &mut Sink,
        key: &str,
        id: &str,
        record: Option<StoredRecord>,
    ) {
        match (self.calls.get_mut(id), record) {
            (Some(call), r) => call.version = r.map_or(0, |r| r.version),
            (None, Some(r)) => s.writes.push(StoreWrite::Delete {
                key: key.to_string(),
                expect: r.version,
            }),
            (None, None) => {}
        }
    }
}
