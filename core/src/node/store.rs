//! The store's answers: committed batches, failed writes (their transmits were never
//! sent), records read back to settle what the store really holds, and the records a
//! restarting node loads.

use super::{BatchId, Node, WriteError};
use crate::b2bua::not_saved;
use crate::message::{Method, Response};
use crate::store::{Key, StoredRecord};
use crate::transaction::{Origin, TxKey};
use crate::UnixMillis;

impl Node {
    /// These batches' writes are durable and their transmits were sent at `now`: what
    /// they sent is retransmitted counting from `now`, not from when it was made.
    pub fn handle_committed(&mut self, now: UnixMillis, ids: &[BatchId]) {
        self.now = now;
        // A batch that left within a fraction of T1 changes no retransmission schedule
        // worth the work (the common case: a prompt fsync).
        let late = now.saturating_sub(self.sink.cfg.timers.t1 / 4);
        for id in ids {
            let Some(sent) = self.ledger.settle(*id) else {
                continue;
            };
            if sent.made_at > late {
                continue;
            }
            for origin in &sent.transmits {
                if let Origin::Request(key) | Origin::Response(key, _) = origin {
                    self.sink.tx.departed(key, now);
                }
            }
            for (key, _) in &sent.writes {
                if let Some(Key::Call(call)) = Key::parse(key) {
                    self.b2bua.departed(&self.sink, call, now);
                }
            }
        }
        self.process_events(now);
        self.flush();
    }

    /// Writes of batch `id` failed. When they held its transmits back, what those
    /// transmits would have told is undone: a 2xx to an INVITE is withdrawn (its
    /// transaction goes back to Proceeding and gets an error response), a failure response
    /// to an INVITE is sent again (it reveals nothing durable), other responses are
    /// forgotten with their transactions (a retransmitted request reaches us afresh),
    /// requests are forgotten with their client transactions (no retransmission reveals
    /// them); and a call whose record could not be saved is ended. A call whose write lost
    /// its compare-and-swap waits for the read-back: someone else may own it now.
    ///
    /// The runtime reads every failed key back and hands the record to
    /// [`Node::handle_store_record`], which settles what the store really holds.
    pub fn handle_commit_failed(
        &mut self,
        now: UnixMillis,
        id: BatchId,
        errors: &[(usize, WriteError)],
    ) {
        self.now = now;
        self.failures_heard += 1;
        let Some(sent) = self.ledger.settle(id) else {
            return;
        };
        self.sink.metrics.store_failures += errors.len() as u64;
        for (i, _) in errors {
            if let Some(Key::Reg(aor)) = sent.writes.get(*i).and_then(|(k, _)| Key::parse(k)) {
                self.registrar.expect_read_back(aor);
            }
        }
        if !errors.is_empty() && errors.iter().all(|(_, e)| *e == WriteError::Fenced) {
            return self.fenced(&sent);
        }
        if !sent.held_by(errors) {
            // The transmits went out: only the read-back has something to settle.
            return;
        }
        let mut withdrawn: Vec<(TxKey, Response)> = Vec::new();
        // Calls whose compare-and-swap lost: another member may run them now, so nothing
        // of theirs is sent again here (their transactions' own timers send it, should the
        // read-back say the call is still ours; store-leader-change-during-takeover seed
        // 30: a 486 went to a caller an adopter had answered 503).
        let lost: Vec<&str> = errors
            .iter()
            .filter(|(_, e)| *e == WriteError::Conflict)
            .filter_map(|(i, _)| sent.writes.get(*i))
            .filter_map(|(k, _)| match Key::parse(k) {
                Some(Key::Call(id)) => Some(id),
                _ => None,
            })
            .collect();
        let tx = &mut self.sink.tx;
        for origin in &sent.transmits {
            match origin {
                Origin::Response(key, code) if key.method == Method::Invite => {
                    let ok = (200..300).contains(code).then(|| tx.withdraw_2xx(key, now));
                    let contested = || {
                        self.b2bua
                            .call_of_server_invite(key)
                            .is_some_and(|id| lost.contains(&id.as_str()))
                    };
                    if let Some(Some(ok)) = ok {
                        withdrawn.push((key.clone(), ok));
                    } else if *code >= 300 && !contested() {
                        tx.resend_response(key);
                    } else if *code >= 300 {
                        // Kept: its Timer G sends it if the call is still ours.
                    } else {
                        tx.abandon(key);
                    }
                }
                Origin::Response(key, _) | Origin::Request(key) => tx.abandon(key),
                Origin::Ack(_) | Origin::Stateless => {}
            }
        }
        self.process_events(now);
        for (_, ok) in &withdrawn {
            // A call that ended meanwhile left the 2xx to retransmit on its own.
            self.b2bua.forget_orphan(ok);
        }
        for (i, (key, _)) in sent.writes.iter().enumerate() {
            // The bindings of an AOR stay in use until the read-back says what is durable:
            // forgetting them would lose registrations the store still holds.
            let Some(Key::Call(call)) = Key::parse(key) else {
                continue;
            };
            let lost = errors
                .iter()
                .any(|(j, e)| *j == i && *e == WriteError::Conflict);
            if lost {
                self.b2bua.contest(call, &mut withdrawn);
            } else {
                self.b2bua
                    .write_failed(&mut self.sink, call, &withdrawn, now);
            }
        }
        for (key, ok) in withdrawn {
            self.sink.respond(&key, not_saved(&ok), now);
        }
        self.flush();
    }

    /// A batch the runtime did not write because the node's lease did not hold: nothing
    /// of it left. Its calls are let go of without a word (another member may own them
    /// by now) and loaded again later; its transactions are given up (a request's sender
    /// retransmits it).
    fn fenced(&mut self, sent: &crate::batch::Sent) {
        for origin in &sent.transmits {
            if let Origin::Response(key, _) | Origin::Request(key) = origin {
                self.sink.tx.abandon(key);
            }
        }
        for (key, _) in &sent.writes {
            if let Some(Key::Call(call)) = Key::parse(key) {
                if self.b2bua.holds(call) {
                    self.b2bua.let_go(&mut self.sink, call);
                    self.cluster.suspended.insert(call.to_string());
                }
            }
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
        self.now = now;
        let record = record.filter(|r| r.is_live(now));
        match Key::parse(key) {
            Some(Key::Reg(aor)) if !self.registrar.take_read_back(aor) => {}
            Some(Key::Reg(aor)) => match &record {
                Some(r) => self.registrar.restore(r),
                None => self.registrar.forget(aor),
            },
            Some(Key::Call(id)) if self.cluster.suspended.contains(id) => {}
            Some(Key::Call(id)) => self.b2bua.read_back(&mut self.sink, key, id, record, now),
            // An A-leg index of ours that outlived its call (its delete failed): deleted.
            // Another member's is its own (a retransmitted INVITE that reached us too
            // found it: cluster-chaos seed 28, which deleted it and made a second call).
            Some(Key::Leg(_)) => {
                let mine = format!("{:x}.", self.sink.node_id);
                let held = record
                    .as_ref()
                    .and_then(|r| std::str::from_utf8(&r.value).ok())
                    .is_none_or(|id| {
                        !id.starts_with(&mine)
                            || self.b2bua.holds(id)
                            || self.cluster.suspended.contains(id)
                    });
                if let Some(r) = record.filter(|_| !held) {
                    self.sink.writes.push(crate::store::StoreWrite::Delete {
                        key: key.to_string(),
                        expect: r.version,
                    });
                }
            }
            Some(
                Key::Node(_) | Key::Incarnation(_) | Key::Owns(_) | Key::Leader | Key::Copy(..),
            )
            | None => {}
        }
        self.flush();
    }

    /// The call records the store holds (a periodic scan): one of this node's that no call
    /// of ours holds is deleted on the version read; on the leader, calls nobody adopted
    /// are taken over (`Node::sweep_orphans`). A write that landed after its call
    /// ended leaves such a record (a create held up in the network, applied after the
    /// call's delete: compare-and-swap cannot tell that absence from the first), and so
    /// does any other write the node gave up on.
    pub fn handle_sweep(&mut self, now: UnixMillis, records: &[StoredRecord]) {
        self.now = now;
        let loading = self.loading_calls();
        for r in records.iter().filter(|r| r.is_live(now)) {
            if let Some(Key::Call(id)) = Key::parse(&r.key) {
                if !loading.contains(id) {
                    self.b2bua.sweep(&mut self.sink, id, r);
                }
            }
        }
        self.sweep_orphans(records, &loading);
        // (Again now and then: a removal whose write lost its compare-and-swap.)
        self.remove_dead_flows(now);
        self.flush();
    }

    /// Loads stored records (after a restart): registrations and this node's calls, with
    /// their deadlines rebuilt from their fields; an `Ending` call sends its BYEs again.
    ///
    /// A cluster member (told of the members first) claims each of its calls for its new
    /// incarnation, a compare-and-swap like any takeover's that goes with whatever the call
    /// sends: a survivor may be adopting the same call while this node was down, and only
    /// one of them may run it.
    pub fn restore(&mut self, records: &[StoredRecord], now: UnixMillis) {
        self.now = now;
        let me = self.sink.node_id;
        for r in records {
            match Key::parse(&r.key) {
                Some(Key::Reg(_)) if r.is_live(now) => self.registrar.restore(r),
                Some(Key::Copy(region, aor)) if r.is_live(now) => {
                    self.registrar.observe_copy(region, aor, Some(r))
                }
                Some(Key::Call(_))
                    if self.is_clustered()
                        && r.is_live(now)
                        && crate::b2bua::owner_of(&r.value) == me
                        && crate::b2bua::Tombstone::parse(&r.value).is_none() =>
                {
                    // A batch of its own: a claim that loses must not hold back what
                    // another call's claim lets it send.
                    self.b2bua.adopt(&mut self.sink, r, now);
                    self.flush();
                }
                Some(Key::Call(_)) => self.b2bua.restore_call(&mut self.sink, r, now),
                _ => {}
            }
        }
        self.handle_timeout(now);
    }
}
