//! The store's answers: committed batches, failed writes (their transmits were never
//! sent), records read back to settle what the store really holds, and the records a
//! restarting node loads.

use super::{Batch, Node};
use crate::message::{parse_datagram, Method, Response, SipMessage};
use crate::store::{Key, StoredRecord};
use crate::transaction::TxKey;
use crate::UnixMillis;

impl Node {
    /// `n` batches with writes were committed and their transmits sent.
    pub fn handle_committed(&mut self, n: usize) {
        self.uncommitted = self.uncommitted.saturating_sub(n);
    }

    /// A batch's writes failed (lost CAS, store down): its transmits were not sent. A call
    /// whose record could not be saved is ended. The runtime then reads every failed key
    /// back and hands the record to [`Node::handle_store_record`], which settles what the
    /// store really holds (the write may have happened after all).
    pub fn handle_store_failure(&mut self, now: UnixMillis, batch: &Batch) {
        self.uncommitted = self.uncommitted.saturating_sub(1);
        self.sink.metrics.store_failures += batch.writes.len() as u64;
        // Nothing of this batch was sent. A 2xx to an INVITE is withdrawn (its transaction
        // goes back to Proceeding and gets an error response below), a failure response to
        // an INVITE is sent again; other responses are forgotten with their transactions,
        // so that a retransmitted request reaches us afresh; requests are forgotten with
        // their client transactions, so that no retransmission reveals them.
        let mut withdrawn = Vec::new();
        let tx = &mut self.sink.tx;
        for t in &batch.transmits {
            match parse_datagram(&t.bytes, &self.sink.limits) {
                Ok(SipMessage::Response(r)) => {
                    let Some(key) = TxKey::server_key_of_response(&r) else {
                        continue;
                    };
                    let invite = key.method == Method::Invite;
                    if invite && (200..300).contains(&r.code) && tx.withdraw_2xx(&key, now) {
                        withdrawn.push((key, r));
                    } else if invite && r.code >= 300 {
                        // An INVITE client that heard a provisional does not retransmit: a
                        // failure answer is sent again rather than taken back (it reveals
                        // nothing durable).
                        tx.resend_response(&key);
                    } else {
                        tx.abandon(&key);
                    }
                }
                Ok(SipMessage::Request(r)) if r.method != Method::Ack => tx.abandon_request(&r),
                _ => {}
            }
        }
        self.process_events(now);
        for w in &batch.writes {
            // The bindings of an AOR stay in use until the read-back says what is durable:
            // forgetting them would lose registrations the store still holds.
            if let Some(Key::Call(id)) = Key::parse(w.key()) {
                self.b2bua.write_failed(&mut self.sink, id, &withdrawn, now);
            }
        }
        for (key, ok) in withdrawn {
            let mut err = Response {
                code: 500,
                reason: "Call State Not Saved".into(),
                headers: Default::default(),
                body: Vec::new(),
            };
            for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                for v in ok.headers.get_all(name) {
                    err.headers.push(name, v);
                }
            }
            self.sink.respond(&key, err, now);
        }
        self.flush();
    }

    /// What the store holds at `key`, read back after a write to it failed: the registrar
    /// takes the stored bindings (or none) as the truth, and a call record that outlived
    /// its call is deleted.
    pub fn handle_store_record(
        &mut self,
        now: UnixMillis,
        key: &str,
        record: Option<StoredRecord>,
    ) {
        let record = record.filter(|r| r.is_live(now));
        match Key::parse(key) {
            Some(Key::Reg(aor)) => match &record {
                Some(r) => self.registrar.restore(r),
                None => self.registrar.forget(aor),
            },
            Some(Key::Call(id)) => self.b2bua.read_back(&mut self.sink, key, id, record),
            None => {}
        }
        self.flush();
    }

    /// Loads stored records (after a restart): registrations and this node's calls, with
    /// their deadlines rebuilt from their fields; an `Ending` call sends its BYEs again.
    pub fn restore(&mut self, records: &[StoredRecord], now: UnixMillis) {
        for r in records {
            match Key::parse(&r.key) {
                Some(Key::Reg(_)) if r.is_live(now) => self.registrar.restore(r),
                Some(Key::Call(_)) => self.b2bua.restore_call(&mut self.sink, r, now),
                _ => {}
            }
        }
        self.handle_timeout(now);
    }
}
