//! One Drongo node, sans-IO: bytes, time and store results in; batches of store writes and
//! transmits out. It ties the message layer, the transaction layer, the registrar, digest
//! authentication and the B2BUA call table together.
//!
//! Durable before visible: every handler ends by closing one [`Batch`]. The runtime commits
//! a batch's writes before it sends the batch's transmits, and keeps batches in order.

use crate::auth::{Authenticator, Verdict};
use crate::b2bua::{Call, CallState, CallTimer, Pending2xx, Relay, Side};
use crate::config::Config;
use crate::dialog::{peer_for_uri, strip_tag, uri_of, Dialog};
use crate::ids::IdGen;
use crate::message::{
    error_response_from_raw, header_param, parse_and_validate, response_to, Action, CSeq, Limits,
    Method, Request, Response, SipMessage, Via,
};
use crate::registrar::{user_of, RegisterOutcome, Registrar};
use crate::store::{call_key, Key, StoreWrite, StoredRecord};
use crate::transaction::{Peer, TransactionLayer, Transmit, Transport, TxEvent, TxKey};
use crate::UnixMillis;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

/// Store writes and the transmits that may only leave once the writes are durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub writes: Vec<StoreWrite>,
    pub transmits: Vec<Transmit>,
    /// The transmits reveal the batch's deletes too (a de-REGISTER's 200), not only its
    /// puts. A call's last delete reveals nothing: its BYEs must leave whether or not the
    /// record could be removed yet (the read-back removes it later).
    pub reveals_deletes: bool,
}

impl Batch {
    /// What the batch must be kept in order with: the store keys it writes and the Call-IDs
    /// of its messages. Two batches that share none may be committed and sent in either
    /// order; two that share one must keep theirs.
    pub fn order_keys(&self) -> impl Iterator<Item = &str> {
        self.writes
            .iter()
            .map(StoreWrite::key)
            .chain(self.transmits.iter().filter_map(|t| t.call_id.as_deref()))
    }

    /// Whether the transmits must stay back because these of the batch's writes failed
    /// (durable before visible): a failed put always holds them, a failed delete when the
    /// transmits reveal it.
    pub fn held_by<'a>(&self, failed: impl IntoIterator<Item = &'a StoreWrite>) -> bool {
        failed.into_iter().any(|w| match w {
            StoreWrite::Put { .. } => true,
            StoreWrite::Delete { .. } => self.reveals_deletes,
        })
    }
}

/// Counters the runtime exposes as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub calls_attempted: u64,
    pub calls_answered: u64,
    pub calls_failed: u64,
    /// Rejected messages by the rule they broke.
    pub parse_errors: BTreeMap<String, u64>,
    /// Messages received, by method or status code.
    pub messages_in: BTreeMap<String, u64>,
    /// Messages sent, by method or status code.
    pub messages_out: BTreeMap<String, u64>,
    pub store_failures: u64,
    /// New requests answered 503 because too much waited for the store.
    pub overload_refusals: u64,
    /// Responses the transaction layer refused, by reason (`InvalidState` is a second
    /// final response: a bug of ours; `UnknownTransaction` one that ended meanwhile).
    pub responses_refused: BTreeMap<String, u64>,
}

/// What a client transaction of ours is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The INVITE to the callee.
    Invite,
    /// An in-dialog request relayed from the other leg.
    Relay,
    /// BYE, CANCEL: answers change nothing.
    Fire,
    /// The BYE that ends the call on this leg: its answer (or timeout) lets the record go.
    Bye(Side),
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER";

/// The first line's method or status code, for counting.
fn label(bytes: &[u8]) -> String {
    let line = bytes.split(|b| *b == b'\r').next().unwrap_or(b"");
    let text = String::from_utf8_lossy(line);
    match text.strip_prefix("SIP/2.0 ") {
        Some(rest) => rest.chars().take(3).collect(),
        None => text.split(' ').next().unwrap_or("").to_string(),
    }
}

fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Ws => "WS",
        Transport::Wss => "WSS",
    }
}

/// Copies the body of one message (request or response) into another, with the header
/// that describes it.
fn copy_body(
    from_headers: &crate::message::Headers,
    from_body: &[u8],
    to_headers: &mut crate::message::Headers,
    body: &mut Vec<u8>,
) {
    if !from_body.is_empty() {
        if let Some(ct) = from_headers.get("Content-Type") {
            to_headers.push("Content-Type", ct);
        }
        *body = from_body.to_vec();
    }
}

/// The request's Max-Forwards (70 when absent, as from an RFC 2543 element).
fn max_forwards(req: &Request) -> u32 {
    req.headers
        .get("Max-Forwards")
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(70)
}

fn session_expires(value: Option<&str>) -> Option<u64> {
    value
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v >= 90)
}

/// A Drongo node.
pub struct Node {
    cfg: Config,
    limits: Limits,
    /// What goes on the wire as ours (Via sent-by, Contact): the bound address, or the
    /// address a load balancer or NAT in front of the node is reached at.
    advertise: SocketAddr,
    branch_prefix: String,
    ids: IdGen,
    tx: TransactionLayer,
    registrar: Registrar,
    auth: Authenticator,
    calls: BTreeMap<String, Call>,
    /// (Call-ID, local tag) of each leg → (call id, side). Hash maps here are only looked
    /// up, never iterated, so they decide no output order.
    dialogs: HashMap<(String, String), (String, Side)>,
    client_txs: HashMap<TxKey, (String, Purpose)>,
    /// The caller's INVITE server transaction → call id (for CANCEL).
    server_invites: HashMap<TxKey, String>,
    call_timers: BTreeSet<(UnixMillis, String)>,
    /// 2xx responses of calls that ended before their ACK came, keyed by the leg's Call-ID
    /// and CSeq: §13.3.1.4 wants them retransmitted until the ACK or 64·T1 all the same.
    orphan_2xx: BTreeMap<(String, u32), (Pending2xx, Peer)>,
    call_scheduled: BTreeMap<String, UnixMillis>,
    writes: Vec<StoreWrite>,
    /// The current step's transmits reveal its deletes (see [`Batch::reveals_deletes`]).
    reveals_deletes: bool,
    extra_transmits: Vec<Transmit>,
    batches: VecDeque<Batch>,
    /// Batches with writes made and not yet answered by the store
    /// ([`Node::handle_committed`], [`Node::handle_store_failure`]): the measure of overload.
    uncommitted: usize,
    diagnostics: VecDeque<String>,
    metrics: Metrics,
    draining: bool,
    node_id: u16,
}

impl Node {
    /// A node that puts `advertise` on the wire (Via sent-by, Contact) and takes its ids from
    /// `seed`. Where it binds is the runtime's business.
    pub fn new(cfg: Config, advertise: SocketAddr, node_id: u16, seed: u64) -> Self {
        let mut ids = IdGen::new(node_id, seed);
        let secret = format!("{}{}", ids.call_id(), ids.call_id());
        Self {
            limits: cfg.parse_limits(),
            tx: TransactionLayer::new(cfg.timers),
            cfg,
            advertise,
            branch_prefix: format!("{}{:x}.", crate::ids::BRANCH_MAGIC_COOKIE, node_id),
            ids,
            registrar: Registrar::default(),
            auth: Authenticator::new(secret),
            calls: BTreeMap::new(),
            dialogs: HashMap::new(),
            client_txs: HashMap::new(),
            server_invites: HashMap::new(),
            call_timers: BTreeSet::new(),
            orphan_2xx: BTreeMap::new(),
            call_scheduled: BTreeMap::new(),
            writes: Vec::new(),
            reveals_deletes: false,
            extra_transmits: Vec::new(),
            batches: VecDeque::new(),
            uncommitted: 0,
            diagnostics: VecDeque::new(),
            metrics: Metrics::default(),
            draining: false,
            node_id,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn registrations(&self) -> usize {
        self.registrar.binding_count()
    }

    pub fn transactions(&self) -> usize {
        self.tx.len()
    }

    /// Stop taking new calls (SIGTERM); existing calls and transactions go on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Nothing a draining node must stay for: no transaction waits for its final response,
    /// no 2xx waits for its ACK, no ending call for the answers to its BYEs. Transactions
    /// that only absorb retransmissions (Timers D, I, J, K, L, M) are no reason to stay.
    /// (Confirmed calls are in the store.)
    pub fn is_idle(&self) -> bool {
        !self.tx.any_awaiting_final_response()
            && self.orphan_2xx.is_empty()
            && self
                .calls
                .values()
                .all(|c| c.state == CallState::Confirmed && c.pending_2xx.is_none())
    }

    pub fn poll_batch(&mut self) -> Option<Batch> {
        self.batches.pop_front()
    }

    /// Whether a batch waits to be taken by [`Node::poll_batch`].
    pub fn has_batch(&self) -> bool {
        !self.batches.is_empty()
    }

    /// `n` batches with writes were committed and their transmits sent.
    pub fn handle_committed(&mut self, n: usize) {
        self.uncommitted = self.uncommitted.saturating_sub(n);
    }

    /// Too much is waiting for the store: new work is refused (503) until it drains.
    pub fn is_overloaded(&self) -> bool {
        self.uncommitted >= self.cfg.limits.max_uncommitted_batches
    }

    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        [
            self.tx.poll_timeout(),
            self.registrar.poll_timeout(),
            self.call_timers.first().map(|(t, _)| *t),
            self.orphan_2xx
                .values()
                .map(|(p, _)| {
                    p.next_retransmit(&self.cfg.timers)
                        .min(p.gives_up_at(&self.cfg.timers))
                })
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A batch's writes failed (lost CAS, store down): its transmits were not sent. A call
    /// whose record could not be saved is ended. The runtime then reads every failed key
    /// back and hands the record to [`Node::handle_store_record`], which settles what the
    /// store really holds (the write may have happened after all).
    pub fn handle_store_failure(&mut self, now: UnixMillis, batch: &Batch) {
        self.uncommitted = self.uncommitted.saturating_sub(1);
        self.metrics.store_failures += batch.writes.len() as u64;
        // Nothing of this batch was sent. A 2xx to an INVITE is withdrawn (its transaction
        // goes back to Proceeding and gets an error response below), a failure response to
        // an INVITE is sent again; other responses are forgotten with their transactions,
        // so that a retransmitted request reaches us afresh; requests are forgotten with
        // their client transactions, so that no retransmission reveals them.
        let mut withdrawn = Vec::new();
        for t in &batch.transmits {
            match crate::message::parse_datagram(&t.bytes, &self.limits) {
                Ok(SipMessage::Response(r)) => {
                    let Some(key) = TxKey::server_key_of_response(&r) else {
                        continue;
                    };
                    let invite = key.method == Method::Invite;
                    if invite && (200..300).contains(&r.code) && self.tx.withdraw_2xx(&key, now) {
                        withdrawn.push((key, r));
                    } else if invite && r.code >= 300 {
                        // An INVITE client that heard a provisional does not retransmit: a
                        // failure answer is sent again rather than taken back (it reveals
                        // nothing durable).
                        self.tx.resend_response(&key);
                    } else {
                        self.tx.abandon(&key);
                    }
                }
                Ok(SipMessage::Request(r)) if r.method != Method::Ack => {
                    self.tx.abandon_request(&r);
                }
                _ => {}
            }
        }
        self.process_events(now);
        for w in &batch.writes {
            // The bindings of an AOR stay in use until the read-back says what is durable:
            // forgetting them would lose registrations the store still holds.
            if let Some(Key::Call(id)) = Key::parse(w.key()) {
                if let Some(call) = self.calls.get_mut(id) {
                    // Which version the store holds is unknown until the read-back, which
                    // deletes it (see `handle_store_record`).
                    call.version = 0;
                    let unanswered = call.pending_2xx.as_ref().is_some_and(|p| {
                        p.side == Side::A
                            && withdrawn.iter().any(|(_, r)| {
                                r.headers.get("Call-ID") == Some(call.a.call_id.as_str())
                            })
                    });
                    if unanswered {
                        // The caller never heard the answer: it gets the error response
                        // below, not a BYE. The callee did answer (and its ACK was lost
                        // with the batch): it gets its ACK again, then the BYE.
                        call.pending_2xx = None;
                        call.a.remote_tag = None;
                        let b_cseq = call.b.local_cseq;
                        self.ack_b(id, b_cseq);
                    }
                }
                self.end_call(id, now);
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
            self.respond(&key, err, now);
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
            Some(Key::Call(id)) => match (self.calls.get_mut(id), record) {
                (Some(call), r) => call.version = r.map_or(0, |r| r.version),
                (None, Some(r)) => self.writes.push(StoreWrite::Delete {
                    key: key.to_string(),
                    expect: r.version,
                }),
                (None, None) => {}
            },
            None => {}
        }
        self.flush();
    }

    /// Loads stored records (after a restart): registrations and this node's calls, with
    /// their deadlines rebuilt from their fields; an `Ending` call sends its BYEs again.
    pub fn restore(&mut self, records: &[StoredRecord], now: UnixMillis) {
        for r in records {
            match Key::parse(&r.key) {
                Some(Key::Reg(_)) => {
                    if r.is_live(now) {
                        self.registrar.restore(r);
                    }
                    continue;
                }
                Some(Key::Call(_)) => {}
                None => continue,
            }
            let Ok(mut call) = serde_json::from_slice::<Call>(&r.value) else {
                continue;
            };
            if call.owner != 0 && call.owner != self.node_id {
                // Another node's call: not ours to run until takeover exists.
                continue;
            }
            call.version = r.version;
            // A 2xx is stored as pending with the record written before it left; its
            // ACK costs no write, so the record goes on saying "pending" until the
            // call's next write. Within its 64·T1 window it is retransmitted (a caller
            // that did ACK acknowledges the copy again, §13.2.2.4); past the window the
            // ACK is taken as come, since a missing one would have ended the call.
            let timers = self.cfg.timers;
            call.pending_2xx = call.pending_2xx.filter(|p| now < p.gives_up_at(&timers));
            if call.pending_2xx.is_none() {
                call.awaiting_ack = None;
            }
            // Transactions died with the old process.
            call.a_invite = None;
            call.b_invite = None;
            call.relays.clear();
            self.index_call(&call);
            let id = call.id.clone();
            let ending = call.byes.clone();
            self.calls.insert(id.clone(), call);
            self.reschedule(&id);
            if !ending.is_empty() {
                // Its BYEs may never have left the node that died: send them again
                // (with a new CSeq, which is stored first).
                self.send_byes(&id, &ending, now);
                self.persist(&id);
            }
        }
        self.handle_timeout(now);
    }

    fn index_call(&mut self, call: &Call) {
        for side in [Side::A, Side::B] {
            let d = call.dialog(side);
            self.dialogs.insert(
                (d.call_id.clone(), d.local_tag.clone()),
                (call.id.clone(), side),
            );
        }
    }

    fn reschedule(&mut self, id: &str) {
        if let Some(old) = self.call_scheduled.remove(id) {
            self.call_timers.remove(&(old, id.to_string()));
        }
        if let Some(at) = self
            .calls
            .get(id)
            .and_then(|c| c.deadline(&self.cfg.timers))
            .map(|(at, _)| at)
        {
            self.call_timers.insert((at, id.to_string()));
            self.call_scheduled.insert(id.to_string(), at);
        }
    }

    /// Closes the current step into a batch.
    fn flush(&mut self) {
        let mut transmits = std::mem::take(&mut self.extra_transmits);
        while let Some(t) = self.tx.poll_transmit() {
            transmits.push(t);
        }
        for t in &transmits {
            *self
                .metrics
                .messages_out
                .entry(label(&t.bytes))
                .or_default() += 1;
        }
        let writes = std::mem::take(&mut self.writes);
        let reveals_deletes = std::mem::take(&mut self.reveals_deletes);
        if !writes.is_empty() || !transmits.is_empty() {
            self.uncommitted += usize::from(!writes.is_empty());
            self.batches.push_back(Batch {
                writes,
                transmits,
                reveals_deletes,
            });
        }
    }

    // ---------------------------------------------------------------- inputs

    /// A datagram (or a frame cut from a stream) from `from`.
    pub fn handle_datagram(&mut self, now: UnixMillis, from: Peer, bytes: &[u8]) {
        match parse_and_validate(bytes, &self.limits) {
            Err(rej) => {
                *self
                    .metrics
                    .parse_errors
                    .entry(rej.rule.reason())
                    .or_default() += 1;
                if matches!(rej.action, Action::Reply(_)) {
                    let tag = self.ids.tag();
                    if let Some(resp) = error_response_from_raw(bytes, &rej, &tag) {
                        self.extra_transmits.push(Transmit {
                            to: from,
                            bytes: resp,
                            call_id: None,
                        });
                    }
                }
            }
            Ok(msg) => {
                let l = match &msg {
                    SipMessage::Request(r) => r.method.to_string(),
                    SipMessage::Response(r) => r.code.to_string(),
                };
                *self.metrics.messages_in.entry(l).or_default() += 1;
                self.tx.handle_message(msg, from, now);
                self.process_events(now);
            }
        }
        self.flush();
    }

    /// Retransmits the 2xx of ended calls that are still waiting for their ACK.
    fn retransmit_orphans(&mut self, now: UnixMillis) {
        let t = self.cfg.timers;
        self.orphan_2xx.retain(|_, (p, _)| now < p.gives_up_at(&t));
        for (p, peer) in self.orphan_2xx.values_mut() {
            if p.next_retransmit(&t) <= now {
                p.retransmits += 1;
                p.last_sent_at = now;
                self.tx
                    .send_stateless(&SipMessage::Response(p.response.clone()), *peer);
            }
        }
    }

    /// Fires every timer due at `now`.
    ///
    /// Each piece of work closes its own batch: a batch's transmits are held back (and its
    /// transactions taken back) when its writes fail, so a retransmission of one transaction
    /// must never share a batch with another call's write.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.tx.handle_timeout(now);
        self.flush();
        self.process_events(now);
        self.flush();
        self.retransmit_orphans(now);
        self.flush();
        let writes = self.registrar.handle_timeout(now);
        self.writes.extend(writes);
        self.flush();
        while let Some((at, id)) = self.call_timers.first().cloned() {
            if at > now {
                break;
            }
            self.call_timer(&id, now);
            self.reschedule(&id);
            self.process_events(now);
            self.flush();
        }
    }

    fn process_events(&mut self, now: UnixMillis) {
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                TxEvent::Request { key, request, from } => self.on_request(key, request, from, now),
                TxEvent::Response { key, response } => self.on_response(&key, response, now),
                TxEvent::Ack { request, .. } => self.on_ack(request, now),
                TxEvent::StrayResponse { response, .. } => self.on_stray_response(response),
                TxEvent::Timeout { key, .. } => self.on_client_failure(&key, 408, now),
                TxEvent::TransportError { key } => self.on_client_failure(&key, 503, now),
                TxEvent::Terminated { key } => {
                    self.client_txs.remove(&key);
                    self.server_invites.remove(&key);
                }
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    fn via(&mut self, transport: Transport) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            transport_token(transport),
            self.advertise,
            self.ids.branch()
        )
    }

    fn contact(&self, transport: Transport) -> String {
        contact_for(self.advertise, transport)
    }

    /// Answers server transaction `key` (a To tag is added when the request has none).
    fn reply(
        &mut self,
        key: &TxKey,
        req: &Request,
        code: u16,
        reason: Option<&str>,
        headers: &[(&str, String)],
        now: UnixMillis,
    ) {
        let tag = self.ids.tag();
        let mut resp = response_to(req, code, reason, &tag);
        for (n, v) in headers {
            resp.headers.push(n, v.clone());
        }
        self.respond(key, resp, now);
    }

    /// Sends `resp` through server transaction `key`. A refusal is never ignored: it is
    /// counted and reported (see [`Node::poll_diagnostic`]).
    fn respond(&mut self, key: &TxKey, resp: Response, now: UnixMillis) {
        let code = resp.code;
        if let Err(e) = self.tx.send_response(key, resp, now) {
            let kind = format!("{e:?}");
            *self
                .metrics
                .responses_refused
                .entry(kind.clone())
                .or_default() += 1;
            self.diagnostics.push_back(format!(
                "{code} to {} {} not sent: {kind}",
                key.method, key.branch
            ));
        }
    }

    /// The next line worth logging (a response refused by its transaction); the runtime
    /// drains these after each input.
    pub fn poll_diagnostic(&mut self) -> Option<String> {
        self.diagnostics.pop_front()
    }

    fn persist(&mut self, id: &str) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let expect = (call.version > 0).then_some(call.version);
        call.version += 1;
        let value = serde_json::to_vec(&*call).unwrap_or_default();
        self.writes.push(StoreWrite::Put {
            key: call_key(id),
            value,
            version: call.version,
            expect,
            expires_at: None,
        });
    }

    fn remove_call(&mut self, id: &str, now: UnixMillis) {
        self.terminate_relays(id, now);
        let Some(call) = self.calls.remove(id) else {
            return;
        };
        if let Some(p) = &call.pending_2xx {
            let leg = call.dialog(p.side);
            self.orphan_2xx
                .insert((leg.call_id.clone(), p.cseq), (p.clone(), leg.peer));
        }
        for side in [Side::A, Side::B] {
            let d = call.dialog(side);
            self.dialogs
                .remove(&(d.call_id.clone(), d.local_tag.clone()));
        }
        if let Some((k, _)) = &call.a_invite {
            self.server_invites.remove(k);
        }
        if call.version > 0 {
            self.writes.push(StoreWrite::Delete {
                key: call_key(id),
                expect: call.version,
            });
        }
        self.reschedule(id);
    }

    /// Sends `req` on a leg as a client transaction.
    fn send(
        &mut self,
        id: &str,
        req: Request,
        to: Peer,
        purpose: Purpose,
        now: UnixMillis,
    ) -> Option<TxKey> {
        match self.tx.send_request(req, to, now) {
            Ok(k) => {
                self.client_txs.insert(k.clone(), (id.to_string(), purpose));
                Some(k)
            }
            Err(_) => None,
        }
    }

    /// Sends BYE on every leg that has a dialog, and forgets the call.
    /// Sends BYE on every leg that has a dialog. A stored call then stays, as `Ending`,
    /// until those BYEs are answered (the write goes before them); an unstored one is
    /// forgotten at once.
    fn end_call(&mut self, id: &str, now: UnixMillis) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let sides: Vec<Side> = [Side::A, Side::B]
            .into_iter()
            .filter(|s| call.dialog(*s).remote_tag.is_some())
            .collect();
        if sides.is_empty() || call.version == 0 {
            self.send_byes(id, &sides, now);
            return self.remove_call(id, now);
        }
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        call.state = CallState::Ending;
        call.byes = sides.clone();
        call.awaiting_ack = None;
        self.terminate_relays(id, now);
        self.send_byes(id, &sides, now);
        self.persist(id);
        self.reschedule(id);
    }

    /// §15.1.2: requests still pending in a dialog that ends get 487, so that no
    /// transaction is left without a final response.
    fn terminate_relays(&mut self, id: &str, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let answers: Vec<(TxKey, Response)> = std::mem::take(&mut call.relays)
            .into_iter()
            .map(|(_, relay)| {
                let tag = &call.dialog(relay.from_side).local_tag;
                let resp = response_to(&relay.request, 487, None, tag);
                (relay.server, resp)
            })
            .collect();
        for (key, resp) in answers {
            self.respond(&key, resp, now);
        }
    }

    fn send_byes(&mut self, id: &str, sides: &[Side], now: UnixMillis) {
        for side in sides {
            let Some(call) = self.calls.get(id) else {
                return;
            };
            let hop = call.dialog(*side).next_hop();
            let via = self.via(hop.transport);
            let contact = self.contact(hop.transport);
            let Some(call) = self.calls.get_mut(id) else {
                return;
            };
            let bye = call
                .dialog_mut(*side)
                .request(Method::Bye, &via, &contact, 70);
            self.send(id, bye, hop, Purpose::Bye(*side), now);
        }
    }

    /// The BYE on `side` was answered (or timed out): once every leg has answered, the
    /// call's record goes.
    fn bye_done(&mut self, id: &str, side: Side, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.state != CallState::Ending {
            return;
        }
        call.byes.retain(|s| *s != side);
        if call.byes.is_empty() {
            self.remove_call(id, now);
        }
    }

    // ---------------------------------------------------------------- requests

    fn on_request(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        let to_tag = req
            .headers
            .get("To")
            .and_then(|t| header_param(t, "tag"))
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(tag) = to_tag {
            if req.method == Method::Cancel {
                return self.on_cancel(&key, &req, now);
            }
            let call_id = req.headers.get("Call-ID").unwrap_or("").to_string();
            match self.dialogs.get(&(call_id, tag)).cloned() {
                Some((id, side)) => self.in_dialog(&id, side, key, req, from, now),
                None => self.reply(&key, &req, 481, None, &[], now),
            }
            return;
        }
        if matches!(req.method, Method::Invite | Method::Register) && self.is_overloaded() {
            // The store is behind: taking more work would only queue it. §21.5.4.
            self.metrics.overload_refusals += 1;
            let wait = (1 + self.ids.below(5)).to_string();
            return self.reply(&key, &req, 503, None, &[("Retry-After", wait)], now);
        }
        match req.method {
            Method::Invite => self.new_call(key, req, from, now),
            Method::Register => self.on_register(key, req, from, now),
            Method::Cancel => self.on_cancel(&key, &req, now),
            Method::Options => {
                let h = [
                    ("Allow", ALLOW.to_string()),
                    ("Accept", "application/sdp".to_string()),
                    ("Supported", "timer".to_string()),
                ];
                self.reply(&key, &req, 200, None, &h, now)
            }
            Method::Bye | Method::Update | Method::Info | Method::Prack => {
                self.reply(&key, &req, 481, None, &[], now)
            }
            _ => self.reply(&key, &req, 405, None, &[("Allow", ALLOW.to_string())], now),
        }
    }

    /// Challenges or checks credentials; `None` when the request may go on.
    fn authenticate(
        &mut self,
        key: &TxKey,
        req: &Request,
        proxy: bool,
        now: UnixMillis,
    ) -> Option<Option<String>> {
        let (hdr, challenge, code) = if proxy {
            ("Proxy-Authorization", "Proxy-Authenticate", 407)
        } else {
            ("Authorization", "WWW-Authenticate", 401)
        };
        match self.auth.verify(req, hdr, &self.cfg, now) {
            Verdict::Authenticated(user) => Some(Some(user)),
            Verdict::Challenge { stale } => {
                let h: Vec<(&str, String)> = self
                    .auth
                    .challenges(&self.cfg, now, stale)
                    .into_iter()
                    .map(|c| (challenge, c))
                    .collect();
                self.reply(key, req, code, None, &h, now);
                None
            }
            Verdict::Forbidden => {
                self.reply(key, req, 403, None, &[], now);
                None
            }
        }
    }

    fn on_register(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        let Some(aor) = req.headers.get("To").map(uri_of).and_then(|u| user_of(&u)) else {
            return self.reply(&key, &req, 404, None, &[], now);
        };
        if self.cfg.auth_required {
            match self.authenticate(&key, &req, false, now) {
                None => return,
                Some(Some(user)) if user != aor => {
                    return self.reply(&key, &req, 403, Some("Wrong User"), &[], now)
                }
                Some(_) => {}
            }
        }
        match self
            .registrar
            .register(&aor, &req, from, now, &self.cfg.registrar)
        {
            RegisterOutcome::Ok { contacts, write } => {
                // The 200 lists what is bound now: a removal it reports must be as durable
                // as an addition (§10.3 step 8, durable before visible).
                self.reveals_deletes = true;
                self.writes.extend(write);
                let h: Vec<(&str, String)> = contacts
                    .into_iter()
                    .map(|(uri, secs)| ("Contact", format!("<{uri}>;expires={secs}")))
                    .collect();
                self.reply(&key, &req, 200, None, &h, now);
            }
            RegisterOutcome::Refused {
                code,
                reason,
                min_expires,
            } => {
                let h: Vec<(&str, String)> = min_expires
                    .map(|m| ("Min-Expires", m.to_string()))
                    .into_iter()
                    .collect();
                self.reply(&key, &req, code, Some(reason), &h, now);
            }
        }
    }

    fn new_call(&mut self, key: TxKey, req: Request, from: Peer, now: UnixMillis) {
        if self.draining {
            return self.reply(&key, &req, 503, None, &[("Retry-After", "5".into())], now);
        }
        if self.cfg.auth_required
            && !self.cfg.trusted_sources.contains(&from.addr.ip())
            && self.authenticate(&key, &req, true, now).is_none()
        {
            return;
        }
        let mf = max_forwards(&req);
        if mf == 0 {
            return self.reply(&key, &req, 483, None, &[], now);
        }
        let looped = req.headers.get_all("Via").filter_map(Via::parse).any(|v| {
            v.branch()
                .is_some_and(|b| b.starts_with(&self.branch_prefix))
                && v.sent_by() == self.advertise.to_string()
        });
        if looped {
            return self.reply(&key, &req, 482, None, &[], now);
        }
        // Where does it go?
        let Some(user) = user_of(&req.uri) else {
            return self.reply(&key, &req, 404, None, &[], now);
        };
        let target = if let Some(r) = self.cfg.routes.iter().find(|r| r.user == user) {
            peer_for_uri(&r.target).map(|p| (r.target.clone(), p))
        } else {
            self.registrar
                .lookup(&user, now)
                .first()
                .map(|b| (b.uri.clone(), peer_for_uri(&b.uri).unwrap_or(b.source)))
        };
        let Some((target_uri, target_peer)) = target else {
            let known = self.cfg.user(&user).is_some();
            return self.reply(&key, &req, if known { 480 } else { 404 }, None, &[], now);
        };
        let h = &req.headers;
        let (Some(from_v), Some(to_v), Some(a_call_id), Some(cseq)) = (
            h.get("From"),
            h.get("To"),
            h.get("Call-ID"),
            h.get("CSeq").and_then(CSeq::parse),
        ) else {
            return self.reply(&key, &req, 400, None, &[], now);
        };
        let Some(a_contact) = h.get("Contact").map(uri_of) else {
            return self.reply(&key, &req, 400, Some("Missing Contact"), &[], now);
        };
        let a = Dialog {
            call_id: a_call_id.to_string(),
            local_tag: self.ids.tag(),
            remote_tag: header_param(from_v, "tag").map(str::to_string),
            local_uri: strip_tag(to_v),
            remote_uri: strip_tag(from_v),
            local_cseq: 0,
            remote_cseq: Some(cseq.seq),
            route_set: h.get_all("Record-Route").map(str::to_string).collect(),
            remote_target: a_contact,
            peer: from,
        };
        let mut b = Dialog {
            call_id: self.ids.call_id(),
            local_tag: self.ids.tag(),
            remote_tag: None,
            local_uri: strip_tag(from_v),
            remote_uri: strip_tag(to_v),
            local_cseq: 0,
            remote_cseq: None,
            route_set: Vec::new(),
            remote_target: target_uri,
            peer: target_peer,
        };
        let via = self.via(target_peer.transport);
        let contact = self.contact(target_peer.transport);
        let mut b_inv = b.request(Method::Invite, &via, &contact, mf - 1);
        for name in ["Allow", "Supported", "Session-Expires", "Min-SE", "Accept"] {
            for v in h.get_all(name) {
                b_inv.headers.push(name, v);
            }
        }
        copy_body(&req.headers, &req.body, &mut b_inv.headers, &mut b_inv.body);
        let id = b.call_id.clone();
        let session_interval =
            session_expires(h.get("Session-Expires")).unwrap_or(self.cfg.session_expires_secs);
        let Some(b_key) = self.send(&id, b_inv.clone(), target_peer, Purpose::Invite, now) else {
            return self.reply(&key, &req, 500, None, &[], now);
        };
        self.metrics.calls_attempted += 1;
        // Tell the caller at once that we are on it (§17.2.1 allows it before 200 ms).
        let trying = response_to(&req, 100, None, "");
        self.respond(&key, trying, now);
        self.server_invites.insert(key.clone(), id.clone());
        let call = Call {
            id: id.clone(),
            version: 0,
            state: CallState::Early,
            a,
            b,
            a_invite: Some((key, req)),
            b_invite: Some((b_key, b_inv)),
            b_provisional: false,
            created_at: now,
            answered_at: None,
            session_interval,
            refreshed_at: now,
            max_duration: self.cfg.max_call_duration_secs,
            pending_2xx: None,
            relays: Vec::new(),
            awaiting_ack: None,
            byes: Vec::new(),
            owner: self.node_id,
        };
        self.index_call(&call);
        self.calls.insert(id, call);
    }

    fn on_cancel(&mut self, key: &TxKey, req: &Request, now: UnixMillis) {
        let Some(invite) = self.tx.invite_for_cancel(key) else {
            return self.reply(key, req, 481, None, &[], now);
        };
        // §9.2: the INVITE's transaction exists, so the CANCEL gets 200; it changes
        // nothing if the INVITE was already answered (its call is then no longer listed).
        self.reply(key, req, 200, None, &[], now);
        if let Some(id) = self.server_invites.get(&invite).cloned() {
            self.give_up_ringing(&id, 487, now);
        }
    }

    /// A ringing call is given up: the caller's INVITE gets `code` (487 when the caller
    /// cancelled, 408 when Timer C fired), the callee a CANCEL once it has sent a
    /// provisional (before that, its INVITE transaction times out on its own). The call
    /// waits in `Cancelling` for the callee's final answer.
    fn give_up_ringing(&mut self, id: &str, code: u16, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.state != CallState::Early {
            return;
        }
        call.state = CallState::Cancelling;
        let (a_tag, a_invite) = (call.a.local_tag.clone(), call.a_invite.clone());
        let send_cancel = call.b_provisional;
        if let Some((k, r)) = a_invite {
            let resp = response_to(&r, code, None, &a_tag);
            self.respond(&k, resp, now);
        }
        if send_cancel {
            self.cancel_callee(id, now);
        }
        self.metrics.calls_failed += 1;
        self.reschedule(id);
    }

    /// CANCEL for the INVITE to the callee (§9.1; only once it has sent a provisional).
    fn cancel_callee(&mut self, id: &str, now: UnixMillis) {
        let Some((b_req, peer)) = self
            .calls
            .get(id)
            .and_then(|c| Some((c.b_invite.as_ref()?.1.clone(), c.b.peer)))
        else {
            return;
        };
        let cancel = crate::message::cancel_for(&b_req);
        self.send(id, cancel, peer, Purpose::Fire, now);
    }

    fn in_dialog(
        &mut self,
        id: &str,
        side: Side,
        key: TxKey,
        req: Request,
        _from: Peer,
        now: UnixMillis,
    ) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let cseq = req
            .headers
            .get("CSeq")
            .and_then(CSeq::parse)
            .map_or(0, |c| c.seq);
        if call.state == CallState::Ending {
            // The call is over; only the BYE that crosses ours is welcome.
            if req.method == Method::Bye {
                self.reply(&key, &req, 200, None, &[], now);
                return self.bye_done(id, side, now);
            }
            return self.reply(&key, &req, 481, None, &[], now);
        }
        // A retransmission of the INVITE whose 2xx we hold (its transaction was lost with a
        // node that restarted from the store): it gets that 2xx, whose own retransmissions
        // go on until the ACK (§13.3.1.4). It is no out-of-order request.
        if let Some(p) = call
            .pending_2xx
            .as_ref()
            .filter(|p| req.method == Method::Invite && p.side == side && p.cseq == cseq)
        {
            let ok = p.response.clone();
            return self.respond(&key, ok, now);
        }
        let d = call.dialog_mut(side);
        if d.remote_cseq.is_some_and(|rc| cseq <= rc) {
            // §14.1: a random 0–10 s, from the node's seeded generator.
            let wait = self.ids.below(11).to_string();
            return self.reply(
                &key,
                &req,
                500,
                Some("Out Of Order"),
                &[("Retry-After", wait)],
                now,
            );
        }
        d.remote_cseq = Some(cseq);
        if matches!(req.method, Method::Invite | Method::Update) {
            if let Some(c) = req.headers.get("Contact") {
                d.remote_target = uri_of(c);
            }
        }
        if req.method == Method::Bye {
            self.reply(&key, &req, 200, None, &[], now);
            if self
                .calls
                .get(id)
                .is_some_and(|c| c.state == CallState::Early)
            {
                self.give_up_ringing(id, 487, now);
                return self.remove_call(id, now);
            }
            // Only the other leg gets our BYE.
            if let Some(call) = self.calls.get_mut(id) {
                call.dialog_mut(side).remote_tag = None;
            }
            return self.end_call(id, now);
        }
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let busy = call.state != CallState::Confirmed
            || (req.method == Method::Invite
                && (call.awaiting_ack.is_some()
                    || call.pending_2xx.is_some()
                    || call
                        .relays
                        .iter()
                        .any(|(_, r)| r.request.method == Method::Invite)));
        if busy {
            return self.reply(&key, &req, 491, None, &[], now);
        }
        // Relay to the other leg with that leg's dialog.
        let other = side.other();
        let hop = call.dialog(other).next_hop();
        let via = self.via(hop.transport);
        let contact = self.contact(hop.transport);
        let mf = max_forwards(&req).saturating_sub(1);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let mut out = call
            .dialog_mut(other)
            .request(req.method.clone(), &via, &contact, mf);
        for name in ["Session-Expires", "Min-SE", "Supported", "Require", "Event"] {
            for v in req.headers.get_all(name) {
                out.headers.push(name, v);
            }
        }
        copy_body(&req.headers, &req.body, &mut out.headers, &mut out.body);
        let sent_cseq = call.dialog(other).local_cseq;
        let relay = Relay {
            server: key,
            from_side: side,
            request: req,
            sent_cseq,
        };
        // The new CSeq must be durable before the request carrying it leaves.
        self.persist(id);
        if let Some(ckey) = self.send(id, out, hop, Purpose::Relay, now) {
            if let Some(call) = self.calls.get_mut(id) {
                call.relays.push((ckey, relay));
            }
        }
    }

    fn on_ack(&mut self, ack: Request, now: UnixMillis) {
        let h = &ack.headers;
        let (Some(call_id), Some(tag), Some(cseq)) = (
            h.get("Call-ID"),
            h.get("To").and_then(|t| header_param(t, "tag")),
            h.get("CSeq").and_then(CSeq::parse),
        ) else {
            return;
        };
        if self
            .orphan_2xx
            .remove(&(call_id.to_string(), cseq.seq))
            .is_some()
        {
            return;
        }
        let Some((id, side)) = self
            .dialogs
            .get(&(call_id.to_string(), tag.to_string()))
            .cloned()
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .pending_2xx
            .as_ref()
            .is_some_and(|p| p.side == side && p.cseq == cseq.seq)
        {
            call.pending_2xx = None;
        }
        if let Some((wait_side, recv_cseq, sent_cseq)) = call.awaiting_ack {
            if wait_side == side && recv_cseq == cseq.seq {
                call.awaiting_ack = None;
                let other = side.other();
                let hop = call.dialog(other).next_hop();
                let via = self.via(hop.transport);
                let contact = self.contact(hop.transport);
                if let Some(call) = self.calls.get(&id) {
                    let mut out = call.dialog(other).request_with_cseq(
                        Method::Ack,
                        sent_cseq,
                        &via,
                        &contact,
                        70,
                    );
                    copy_body(&ack.headers, &ack.body, &mut out.headers, &mut out.body);
                    self.tx.send_stateless(&SipMessage::Request(out), hop);
                }
            }
        }
        let _ = now;
        self.reschedule(&id);
    }

    // ---------------------------------------------------------------- responses

    fn on_response(&mut self, key: &TxKey, resp: Response, now: UnixMillis) {
        let Some((id, purpose)) = self.client_txs.get(key).cloned() else {
            return;
        };
        match purpose {
            Purpose::Invite => self.on_invite_response(&id, resp, now),
            Purpose::Relay => self.on_relay_response(&id, key, resp, now),
            Purpose::Fire => {}
            Purpose::Bye(side) if resp.code >= 200 => self.bye_done(&id, side, now),
            Purpose::Bye(_) => {}
        }
        self.reschedule(&id);
    }

    /// ACK for a 2xx to our INVITE on leg B (§13.2.2.4): a new transaction-less request.
    fn ack_b(&mut self, id: &str, cseq: u32) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let hop = call.b.next_hop();
        let via = self.via(hop.transport);
        let contact = self.contact(hop.transport);
        if let Some(call) = self.calls.get(id) {
            let ack = call
                .b
                .request_with_cseq(Method::Ack, cseq, &via, &contact, 70);
            self.tx.send_stateless(&SipMessage::Request(ack), hop);
        }
    }

    fn on_invite_response(&mut self, id: &str, resp: Response, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let to_tag = resp
            .headers
            .get("To")
            .and_then(|t| header_param(t, "tag"))
            .map(str::to_string);
        let code = resp.code;
        if code == 100 {
            return;
        }
        if (101..200).contains(&code) {
            let first = !call.b_provisional;
            call.b_provisional = true;
            if to_tag.is_some() {
                call.b.remote_tag = to_tag;
            }
            if call.state == CallState::Cancelling {
                if first {
                    self.cancel_callee(id, now);
                }
                return;
            }
            let Some((akey, areq)) = call.a_invite.clone() else {
                return;
            };
            let mut out = response_to(&areq, code, Some(&resp.reason), &call.a.local_tag);
            out.headers.push(
                "Contact",
                contact_for(self.advertise, call.a.peer.transport),
            );
            copy_body(&resp.headers, &resp.body, &mut out.headers, &mut out.body);
            self.respond(&akey, out, now);
            return;
        }
        if (200..300).contains(&code) {
            if call.state == CallState::Confirmed {
                // A retransmission: our ACK was lost.
                let cseq = call.b.local_cseq.max(1);
                return self.ack_b(id, cseq);
            }
            call.b.remote_tag = to_tag;
            if let Some(c) = resp.headers.get("Contact") {
                call.b.remote_target = uri_of(c);
            }
            let mut rr: Vec<String> = resp
                .headers
                .get_all("Record-Route")
                .map(str::to_string)
                .collect();
            rr.reverse();
            call.b.route_set = rr;
            let b_cseq = call.b.local_cseq;
            if call.state == CallState::Cancelling {
                // Answered after the caller cancelled: ACK and hang up the callee.
                self.ack_b(id, b_cseq);
                if let Some(c) = self.calls.get_mut(id) {
                    c.a.remote_tag = None;
                }
                return self.end_call(id, now);
            }
            self.ack_b(id, b_cseq);
            let Some(call) = self.calls.get_mut(id) else {
                return;
            };
            let Some((akey, areq)) = call.a_invite.take() else {
                return;
            };
            let mut out = response_to(&areq, code, Some(&resp.reason), &call.a.local_tag);
            out.headers.push(
                "Contact",
                contact_for(self.advertise, call.a.peer.transport),
            );
            if let Some(se) = resp.headers.get("Session-Expires") {
                out.headers.push("Session-Expires", se);
                if let Some(s) = session_expires(Some(se)) {
                    call.session_interval = s;
                }
            }
            copy_body(&resp.headers, &resp.body, &mut out.headers, &mut out.body);
            let a_cseq = call.a.remote_cseq.unwrap_or(0);
            call.state = CallState::Confirmed;
            call.answered_at = Some(now);
            call.refreshed_at = now;
            call.pending_2xx = Some(Pending2xx {
                side: Side::A,
                response: out.clone(),
                cseq: a_cseq,
                first_sent_at: now,
                last_sent_at: now,
                retransmits: 0,
            });
            self.server_invites.remove(&akey);
            self.metrics.calls_answered += 1;
            // Durable before visible: the record goes in the same batch, before the 200.
            self.persist(id);
            self.respond(&akey, out, now);
            return;
        }
        // 300-699: relay the failure (the transaction ACKs the callee).
        let state = call.state;
        if state == CallState::Early {
            if let Some((akey, areq)) = call.a_invite.clone() {
                let out = response_to(&areq, code, Some(&resp.reason), &call.a.local_tag);
                self.respond(&akey, out, now);
            }
            self.metrics.calls_failed += 1;
        }
        if state != CallState::Confirmed {
            self.remove_call(id, now);
        }
    }

    fn on_relay_response(&mut self, id: &str, ckey: &TxKey, resp: Response, now: UnixMillis) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some(pos) = call.relays.iter().position(|(k, _)| k == ckey) else {
            return;
        };
        let relay = call.relays[pos].1.clone();
        let code = resp.code;
        if code == 100 {
            return;
        }
        let is_invite = relay.request.method == Method::Invite;
        let mut out = response_to(&relay.request, code, Some(&resp.reason), "");
        if (200..300).contains(&code)
            && matches!(relay.request.method, Method::Invite | Method::Update)
        {
            let t = call.dialog(relay.from_side).peer.transport;
            out.headers.push("Contact", contact_for(self.advertise, t));
            if let Some(se) = resp.headers.get("Session-Expires") {
                out.headers.push("Session-Expires", se);
            }
            call.refreshed_at = now;
            if let Some(c) = resp.headers.get("Contact") {
                call.dialog_mut(relay.from_side.other()).remote_target = uri_of(c);
            }
        }
        copy_body(&resp.headers, &resp.body, &mut out.headers, &mut out.body);
        if code >= 200 {
            call.relays.remove(pos);
            if is_invite && (200..300).contains(&code) {
                let recv_cseq = relay
                    .request
                    .headers
                    .get("CSeq")
                    .and_then(CSeq::parse)
                    .map_or(0, |c| c.seq);
                call.awaiting_ack = Some((relay.from_side, recv_cseq, relay.sent_cseq));
                call.pending_2xx = Some(Pending2xx {
                    side: relay.from_side,
                    response: out.clone(),
                    cseq: recv_cseq,
                    first_sent_at: now,
                    last_sent_at: now,
                    retransmits: 0,
                });
            }
            if (200..300).contains(&code) {
                self.persist(id);
            }
        }
        self.respond(&relay.server, out, now);
    }

    fn on_stray_response(&mut self, resp: Response) {
        // A 2xx to our INVITE after its transaction ended: our ACK was lost, send it again.
        let h = &resp.headers;
        let is_invite_2xx = (200..300).contains(&resp.code)
            && h.get("CSeq")
                .and_then(CSeq::parse)
                .is_some_and(|c| c.method == Method::Invite);
        if !is_invite_2xx {
            return;
        }
        let (Some(call_id), Some(tag), Some(cseq)) = (
            h.get("Call-ID"),
            h.get("From").and_then(|f| header_param(f, "tag")),
            h.get("CSeq").and_then(CSeq::parse),
        ) else {
            return;
        };
        if let Some((id, Side::B)) = self
            .dialogs
            .get(&(call_id.to_string(), tag.to_string()))
            .cloned()
        {
            self.ack_b(&id, cseq.seq);
        }
    }

    fn on_client_failure(&mut self, key: &TxKey, code: u16, now: UnixMillis) {
        let Some((id, purpose)) = self.client_txs.get(key).cloned() else {
            return;
        };
        match purpose {
            Purpose::Invite => {
                let Some(call) = self.calls.get(&id) else {
                    return;
                };
                if call.state == CallState::Early {
                    if let Some((akey, areq)) = call.a_invite.clone() {
                        let out = response_to(&areq, code, None, &call.a.local_tag);
                        self.respond(&akey, out, now);
                    }
                    self.metrics.calls_failed += 1;
                }
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.state != CallState::Confirmed)
                {
                    self.remove_call(&id, now);
                }
            }
            Purpose::Relay => {
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                if let Some(pos) = call.relays.iter().position(|(k, _)| k == key) {
                    let relay = call.relays.remove(pos).1;
                    let out = response_to(&relay.request, code, None, "");
                    self.respond(&relay.server, out, now);
                }
            }
            Purpose::Fire => {}
            Purpose::Bye(side) => self.bye_done(&id, side, now),
        }
    }

    // ---------------------------------------------------------------- call timers

    fn call_timer(&mut self, id: &str, now: UnixMillis) {
        let t = self.cfg.timers;
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some((_, timer)) = call.deadline(&t) else {
            return;
        };
        match timer {
            CallTimer::Retransmit2xx => {
                if let Some(p) = call.pending_2xx.as_mut() {
                    p.retransmits += 1;
                    p.last_sent_at = now;
                    let to = match p.side {
                        Side::A => call.a.peer,
                        Side::B => call.b.peer,
                    };
                    let msg = SipMessage::Response(p.response.clone());
                    self.tx.send_stateless(&msg, to);
                }
            }
            CallTimer::AckTimeout => {
                // §13.3.1.4: no ACK within 64·T1: the session is over.
                call.pending_2xx = None;
                if let Some((side, _, sent_cseq)) = call.awaiting_ack.take() {
                    let other = side.other();
                    let hop = call.dialog(other).next_hop();
                    let via = self.via(hop.transport);
                    if let Some(c) = self.calls.get(id) {
                        let ack =
                            c.dialog(other)
                                .request_with_cseq(Method::Ack, sent_cseq, &via, "", 70);
                        self.tx.send_stateless(&SipMessage::Request(ack), hop);
                    }
                }
                self.end_call(id, now);
            }
            CallTimer::SessionExpired | CallTimer::MaxDuration => self.end_call(id, now),
            CallTimer::NoAnswer => self.give_up_ringing(id, 408, now),
        }
    }
}

/// Our Contact for a leg over `transport`.
fn contact_for(local: SocketAddr, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("<sip:drongo@{local}>"),
        t => format!(
            "<sip:drongo@{local};transport={}>",
            transport_token(t).to_ascii_lowercase()
        ),
    }
}
