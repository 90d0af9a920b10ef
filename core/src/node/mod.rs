//! One Drongo node, sans-IO: bytes, time and store results in; batches of store writes and
//! transmits out. It ties the message layer, the transaction layer, the registrar, digest
//! authentication and the B2BUA together: [`requests`] decides what a new request gets,
//! [`store`] handles the store's answers and restarts; the calls are the B2BUA's.
//!
//! Durable before visible: every handler ends by closing one [`Batch`]. The runtime commits
//! a batch's writes before it sends the batch's transmits, and keeps batches in order.

mod bindings;
mod cluster;
mod forward;
mod leader;
mod parked;
mod requests;
mod standby;
mod store;
mod strays;

pub use crate::batch::{Batch, BatchId, WriteError};
pub use crate::metrics::Metrics;

use crate::auth::Authenticator;
use crate::b2bua::B2bua;
use crate::batch::Ledger;
use crate::config::Config;
use crate::message::{error_response_from_raw, parse_and_validate, Action, SipMessage};
use crate::metrics::label;
use crate::registrar::Registrar;
use crate::sink::Sink;
use crate::store::StoredRecord;
use crate::transaction::{Origin, Peer, Transmit, TxEvent};
use crate::UnixMillis;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// A Drongo node.
pub struct Node {
    /// The transaction layer, ids, addresses and the current step's outputs.
    sink: Sink,
    b2bua: B2bua,
    registrar: Registrar,
    auth: Authenticator,
    /// Branch prefix of our own Vias (loop detection).
    branch_prefix: String,
    batches: VecDeque<Batch>,
    /// Batches with writes not yet answered by the store: the measure of overload, and
    /// what a failure undoes.
    ledger: Ledger,
    draining: bool,
    /// Cluster membership and the requests waiting for a call to be loaded.
    cluster: cluster::Membership,
    /// Calls this node stands by for (strategy `hot-standby`).
    standby: standby::Standby,
    /// Lookups of bindings waiting for the store (in a cluster).
    lookups: bindings::Lookups,
    /// The time of the input being handled (every public `handle_*` sets it).
    now: UnixMillis,
    /// Write failures heard of (each `CommitFailed`): see [`Batch::heard`].
    failures_heard: u64,
}

/// What the runtime hands the node: bytes, the time, and the store's answers. The node
/// answers through [`Node::poll_batch`], [`Node::poll_timeout`] and
/// [`Node::poll_diagnostic`] (quinn-proto's shape: the runtime takes a batch only when
/// its committer has room, so batches are pulled rather than returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A datagram, or a frame cut from a stream, from `from`.
    Datagram { from: Peer, bytes: Vec<u8> },
    /// A deadline from [`Node::poll_timeout`] has come.
    Timeout,
    /// These batches' writes are durable and their transmits were sent.
    Committed(Vec<BatchId>),
    /// Writes of batch `id` failed (by their index in the batch, and why). Its transmits
    /// were held back when [`Batch::held_by`] says so, and sent otherwise.
    CommitFailed {
        id: BatchId,
        errors: Vec<(usize, WriteError)>,
    },
    /// What the store holds at `key`, read back after a write to it failed.
    Record {
        key: String,
        record: Option<StoredRecord>,
    },
    /// Every call record the store holds, scanned now and then (see
    /// [`Node::handle_sweep`]).
    Sweep(Vec<StoredRecord>),
    /// The live cluster members (id, incarnation), the ids of those draining, each one's
    /// SIP address as members reach it (requests for its calls are forwarded there), and
    /// this node's incarnation (see [`Node::handle_members`]).
    Members {
        incarnation: u64,
        members: Vec<(u16, u64)>,
        draining: Vec<u16>,
        addresses: Vec<(u16, SocketAddr)>,
    },
    /// A change to a call record seen by the store watch (strategy `hot-standby`; see
    /// [`Node::handle_watched`]).
    Watched {
        key: String,
        record: Option<StoredRecord>,
    },
    /// Whether this node leads the cluster, with its term (see [`Node::handle_leader`]).
    Leader { term: Option<u64> },
    /// What the store holds at `key`, asked for by [`Node::poll_load`] (`None`: the store
    /// did not answer).
    Loaded {
        key: String,
        record: Option<Option<StoredRecord>>,
    },
    /// The records under `prefix`, asked for by [`Node::poll_scan`] (`None`: no answer).
    Scanned {
        prefix: String,
        records: Option<Vec<StoredRecord>>,
    },
}

impl Node {
    /// A node that puts `advertise` on the wire (Via sent-by, Contact) and takes its ids from
    /// `seed`. Where it binds is the runtime's business.
    pub fn new(cfg: Config, advertise: SocketAddr, node_id: u16, seed: u64) -> Self {
        let mut sink = Sink::new(cfg, advertise, node_id, seed);
        let secret = format!("{}{}", sink.ids.call_id(), sink.ids.call_id());
        Self {
            sink,
            b2bua: B2bua::default(),
            registrar: Registrar::default(),
            auth: Authenticator::new(secret),
            branch_prefix: format!("{}{:x}.", crate::ids::BRANCH_MAGIC_COOKIE, node_id),
            batches: VecDeque::new(),
            ledger: Ledger::default(),
            draining: false,
            cluster: Default::default(),
            standby: Default::default(),
            lookups: Default::default(),
            now: 0,
            failures_heard: 0,
        }
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.sink.metrics
    }

    pub fn active_calls(&self) -> usize {
        self.b2bua.len()
    }

    pub fn registrations(&self) -> usize {
        self.registrar.binding_count()
    }

    pub fn transactions(&self) -> usize {
        self.sink.tx.len()
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
        !self.sink.tx.any_awaiting_final_response() && self.b2bua.is_idle()
    }

    /// What keeps a draining node from being idle, one line each (logged while a drain
    /// lasts, so that a drain that waits long says why): transactions awaiting their final
    /// response, calls not settled, 2xx awaiting ACK, requests waiting for a read or
    /// held for a live owner.
    pub fn drain_holds(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .sink
            .tx
            .iter()
            .filter(|(_, t)| t.awaits_final_response())
            .map(|(k, _)| format!("{:?} {} transaction {}", k.role, k.method, k.branch))
            .collect();
        lines.extend(self.b2bua.calls().filter(|c| !c.is_settled()).map(|c| {
            format!(
                "call {} {:?}, 2xx awaiting ACK: {}",
                c.id,
                c.state,
                c.pending_2xx.is_some()
            )
        }));
        lines.extend(self.cluster.held.iter().map(|(id, (owner, until, _))| {
            format!("request in {id} held for member {owner} until {until}")
        }));
        if self.b2bua.has_orphans() {
            lines.push("2xx of ended calls awaiting ACK".into());
        }
        lines
    }

    pub fn poll_batch(&mut self) -> Option<Batch> {
        self.batches.pop_front()
    }

    /// Whether a batch waits to be taken by [`Node::poll_batch`].
    pub fn has_batch(&self) -> bool {
        !self.batches.is_empty()
    }

    /// The next line worth logging (a response refused by its transaction); the runtime
    /// drains these after each input.
    pub fn poll_diagnostic(&mut self) -> Option<String> {
        self.sink.diagnostics.pop_front()
    }

    /// The earliest deadline of any timer: transactions, bindings, calls.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        [
            self.sink.tx.poll_timeout(),
            self.registrar.poll_timeout(),
            self.b2bua.poll_timeout(),
            self.held_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One input at `now`.
    pub fn handle_input(&mut self, now: UnixMillis, input: Input) {
        match input {
            Input::Datagram { from, bytes } => self.handle_datagram(now, from, &bytes),
            Input::Timeout => self.handle_timeout(now),
            Input::Committed(ids) => self.handle_committed(now, &ids),
            Input::CommitFailed { id, errors } => self.handle_commit_failed(now, id, &errors),
            Input::Record { key, record } => self.handle_store_record(now, &key, record),
            Input::Sweep(records) => self.handle_sweep(now, &records),
            Input::Members {
                incarnation,
                members,
                draining,
                addresses,
            } => {
                self.handle_member_addresses(&addresses);
                self.handle_members(now, incarnation, &members, &draining)
            }
            Input::Leader { term } => self.handle_leader(now, term),
            Input::Watched { key, record } => self.handle_watched(now, &key, record),
            Input::Loaded { key, record } => self.handle_loaded(now, &key, record),
            Input::Scanned { prefix, records } => self.handle_scanned(now, &prefix, records),
        }
    }

    /// A datagram (or a frame cut from a stream) from `from`.
    pub fn handle_datagram(&mut self, now: UnixMillis, from: Peer, bytes: &[u8]) {
        self.now = now;
        match parse_and_validate(bytes, &self.sink.limits) {
            Err(rej) => {
                let m = &mut self.sink.metrics;
                *m.parse_errors.entry(rej.rule.reason()).or_default() += 1;
                if matches!(rej.action, Action::Reply(_)) {
                    let tag = self.sink.ids.tag();
                    if let Some(resp) = error_response_from_raw(bytes, &rej, &tag) {
                        self.sink.extra_transmits.push(Transmit {
                            to: from,
                            bytes: resp,
                            call_id: None,
                            origin: Origin::Stateless,
                            retransmission: false,
                        });
                    }
                }
            }
            Ok(msg) => {
                let l = match &msg {
                    SipMessage::Request(r) => r.method.to_string(),
                    SipMessage::Response(r) => r.code.to_string(),
                };
                *self.sink.metrics.messages_in.entry(l).or_default() += 1;
                if let SipMessage::Request(req) = &msg {
                    if !self.cluster.relays.is_empty() {
                        // A retransmission of a request forwarded to its call's owner.
                        self.forward_again(req);
                    }
                }
                self.sink.tx.handle_message(msg, from, now);
                self.process_events(now);
            }
        }
        self.flush();
    }

    /// Fires every timer due at `now`.
    ///
    /// Each piece of work closes its own batch: a batch's transmits are held back (and its
    /// transactions taken back) when its writes fail, so a retransmission of one transaction
    /// must never share a batch with another call's write.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.now = now;
        self.sink.tx.handle_timeout(now);
        self.flush();
        self.process_events(now);
        self.flush();
        self.b2bua.retransmit_orphans(&mut self.sink, now);
        self.flush();
        self.release_held(now);
        self.flush();
        let watchdog = self.runs_watchdog();
        let writes = self.registrar.handle_timeout(now, watchdog);
        self.sink.metrics.bindings_expired = self.registrar.expired_removed();
        // In a cluster the watchdog is the leader's chore: its writes carry the term.
        let term = self.cluster.leader_term.filter(|_| self.is_clustered());
        self.sink
            .writes
            .extend(writes.into_iter().map(|w| match term {
                Some(t) => w.fenced(t),
                None => w,
            }));
        self.flush();
        while let Some(id) = self.b2bua.first_due(now) {
            self.b2bua.fire_timer(&mut self.sink, &id, now);
            self.process_events(now);
            self.flush();
        }
    }

    /// Hands what the transaction layer reported to the request logic and the B2BUA.
    fn process_events(&mut self, now: UnixMillis) {
        while let Some(ev) = self.sink.tx.poll_event() {
            let (b, s) = (&mut self.b2bua, &mut self.sink);
            match ev {
                TxEvent::Request { key, request, from } => self.on_request(key, request, from, now),
                TxEvent::Response { key, response } => b.on_response(s, &key, response, now),
                TxEvent::Ack { request, .. } => {
                    if !self.forward_ack(&request) {
                        self.b2bua.on_ack(&mut self.sink, request);
                    }
                }
                TxEvent::StrayResponse { response, .. } => {
                    if !self.relay_response(&response, now) && !self.await_owner(&response) {
                        self.b2bua.on_stray_response(&mut self.sink, response);
                    }
                }
                TxEvent::Timeout { key, .. } => b.on_client_failure(s, &key, 408, now),
                TxEvent::TransportError { key } => b.on_client_failure(s, &key, 503, now),
                TxEvent::Terminated { key } => b.transaction_ended(s, &key, now),
            }
        }
    }

    /// Closes the current step into a batch. A retransmission whose first copy still waits
    /// for the store is dropped (see [`Ledger::holds_copy`]): the peer has not even had the
    /// first copy, and the transaction's next timer sends another.
    fn flush(&mut self) {
        let Some(mut batch) = self.sink.close_step() else {
            return;
        };
        let (ledger, m, b2bua) = (&self.ledger, &mut self.sink.metrics, &self.b2bua);
        batch.transmits.retain(|t| {
            let c = t.call_id.as_deref();
            let drop = t.retransmission
                && (ledger.holds_copy(&t.origin, c)
                    || c.is_some_and(|c| b2bua.is_contested_leg(c)));
            m.retransmissions_dropped += u64::from(drop);
            !drop
        });
        for t in &batch.transmits {
            *m.messages_out.entry(label(&t.bytes)).or_default() += 1;
        }
        if batch.writes.is_empty() && batch.transmits.is_empty() {
            return;
        }
        batch.id = self.ledger.next_id();
        batch.heard = self.failures_heard;
        batch.report = !batch.writes.is_empty() || self.ledger.holds_back(&batch.transmits);
        if batch.report {
            self.ledger.record(&batch, self.now);
        }
        self.batches.push_back(batch);
    }
}
