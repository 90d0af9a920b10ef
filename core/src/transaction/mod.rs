//! The transaction layer (RFC 3261 §17, with RFC 6026 and RFC 4320): the four state
//! machines, matching of requests and responses to transactions, and a sans-IO face in the
//! style of quinn-proto.
//!
//! The caller pushes inputs (`handle_message`, `handle_timeout`, `send_request`,
//! `send_response`, `handle_transport_error`) and drains outputs (`poll_transmit`,
//! `poll_event`) until they return `None`, then sleeps until `poll_timeout()`.
//!
//! Responses of a server transaction go back to the peer the request came from (over the
//! same connection for streams; for UDP this is what `rport` gives, RFC 3581).

mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;
mod table;
mod timers;

pub use client_invite::{ClientInviteState, ClientInviteTransaction};
pub use client_non_invite::{ClientNonInviteState, ClientNonInviteTransaction};
pub use server_invite::{ServerInviteState, ServerInviteTransaction};
pub use server_non_invite::{ServerNonInviteState, ServerNonInviteTransaction};
pub use timers::{Deadline, Timer, TimerConfig, TIMER_D_UNRELIABLE, TRYING_DELAY};

use crate::ids::BRANCH_MAGIC_COOKIE;
use crate::message::{header_param, CSeq, Method, Request, Response, SipMessage, Via};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::SocketAddr;
use table::Table;

/// A transport protocol of §18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Reliable transports need no retransmissions and zero wait timers (D, I, J, K).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Client or server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Client,
    Server,
}

/// Identifies a transaction (§17.1.3, §17.2.3): the branch, the sent-by of the top Via
/// (server side), and the method, where ACK counts as INVITE. A request whose branch lacks
/// the magic cookie (RFC 2543) gets a branch made of the fields §17.2.3 says to compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxKey {
    pub role: Role,
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl TxKey {
    fn matching_method(method: &Method) -> Method {
        if *method == Method::Ack {
            Method::Invite
        } else {
            method.clone()
        }
    }

    /// The server transaction key of a request; `None` if it has no usable Via or CSeq.
    pub fn for_request(req: &Request) -> Option<TxKey> {
        let via = Via::parse(req.headers.get("Via")?)?;
        let method = Self::matching_method(&req.method);
        let branch = match via.branch() {
            Some(b) if b.starts_with(BRANCH_MAGIC_COOKIE) => b.to_string(),
            _ => {
                let h = &req.headers;
                let cseq = CSeq::parse(h.get("CSeq")?)?;
                let from_tag = h.get("From").and_then(|f| header_param(f, "tag"));
                format!(
                    "rfc2543|{}|{}|{}|{}|{}",
                    req.uri,
                    h.get("Call-ID")?,
                    from_tag.unwrap_or(""),
                    cseq.seq,
                    h.get("Via")?
                )
            }
        };
        Some(TxKey {
            role: Role::Server,
            branch,
            sent_by: via.sent_by(),
            method,
        })
    }

    /// The client transaction key a response matches (§17.1.3): top Via branch and the
    /// CSeq method.
    pub fn for_response(resp: &Response) -> Option<TxKey> {
        let via = Via::parse(resp.headers.get("Via")?)?;
        let cseq = CSeq::parse(resp.headers.get("CSeq")?)?;
        Some(TxKey {
            role: Role::Client,
            branch: via.branch()?.to_string(),
            sent_by: String::new(),
            method: cseq.method,
        })
    }

    /// The server transaction key a response we sent belongs to (magic-cookie branches
    /// only: that is how a server finds it again).
    pub fn server_key_of_response(resp: &Response) -> Option<TxKey> {
        let via = Via::parse(resp.headers.get("Via")?)?;
        let cseq = CSeq::parse(resp.headers.get("CSeq")?)?;
        let branch = via
            .branch()
            .filter(|b| b.starts_with(BRANCH_MAGIC_COOKIE))?;
        Some(TxKey {
            role: Role::Server,
            branch: branch.to_string(),
            sent_by: via.sent_by(),
            method: Self::matching_method(&cseq.method),
        })
    }

    /// The key of the client transaction that sends `req`.
    fn for_outgoing(req: &Request) -> Option<TxKey> {
        let via = Via::parse(req.headers.get("Via")?)?;
        let branch = via.branch()?;
        if !branch.starts_with(BRANCH_MAGIC_COOKIE) {
            return None;
        }
        Some(TxKey {
            role: Role::Client,
            branch: branch.to_string(),
            sent_by: String::new(),
            method: req.method.clone(),
        })
    }
}

/// Bytes to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Vec<u8>,
    /// The Call-ID of the message (`None` for an answer to something unparsable): messages
    /// of one Call-ID keep their order; others need not wait for each other.
    pub call_id: Option<String>,
    /// What sent it, so that a batch whose writes failed is undone without parsing its
    /// bytes again.
    pub origin: Origin,
    /// A copy of something sent before (a timer's retransmission, an answer resent to a
    /// retransmitted request): the node drops it while the first copy may still be
    /// waiting for the store.
    pub retransmission: bool,
}

/// What sent a [`Transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The request of client transaction `key`.
    Request(TxKey),
    /// The ACK that INVITE client transaction `key` sends for a non-2xx answer.
    Ack(TxKey),
    /// A response with status `code` of server transaction `key`.
    Response(TxKey, u16),
    /// Nothing stateful: an ACK for a 2xx, the TU's 2xx retransmissions, an answer to a
    /// message that could not be parsed.
    Stateless,
}

/// What the transaction layer tells its user (the TU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new server transaction: the TU must answer it with `send_response`.
    Request {
        key: TxKey,
        request: Request,
        from: Peer,
    },
    /// A response for a client transaction.
    Response { key: TxKey, response: Response },
    /// An ACK that is not part of a transaction (the ACK for a 2xx, §17.1.1.3), or that
    /// reached an INVITE server transaction in the Accepted state (RFC 6026 §8.7).
    Ack { request: Request, from: Peer },
    /// A response that matches no client transaction.
    StrayResponse { response: Response, from: Peer },
    /// Timer B or F fired (no final response), or Timer H (no ACK for our final response).
    Timeout { key: TxKey, timer: Timer },
    /// The transport failed to send for this transaction.
    TransportError { key: TxKey },
    /// The transaction is gone; its key may be reused.
    Terminated { key: TxKey },
}

/// A command the layer refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// No such transaction (it may have terminated).
    UnknownTransaction,
    /// A transaction with this key already exists.
    DuplicateTransaction,
    /// The request has no top Via with a magic-cookie branch, or no valid CSeq.
    BadRequest,
    /// The response is not allowed in the transaction's state (e.g. a second final).
    InvalidState,
    /// RFC 4320: a non-INVITE transaction never sends 100, nor 408.
    ForbiddenResponse,
    /// ACK is never a client transaction; send it with `send_stateless`.
    AckIsNotATransaction,
}

/// Where a machine's outputs go during one step.
pub(crate) struct Out<'a> {
    key: &'a TxKey,
    /// The Call-ID of the transaction's request, which every message it sends carries.
    call_id: Option<&'a str>,
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<TxEvent>,
}

impl Out<'_> {
    fn send(&mut self, to: Peer, bytes: Vec<u8>, origin: Origin, retransmission: bool) {
        self.transmits.push_back(Transmit {
            to,
            bytes,
            call_id: self.call_id.map(str::to_string),
            origin,
            retransmission,
        });
    }

    /// The transaction's request (`again`: a retransmission).
    fn send_request(&mut self, to: Peer, bytes: Vec<u8>, again: bool) {
        self.send(to, bytes, Origin::Request(self.key()), again);
    }

    /// The ACK of an INVITE client transaction for a non-2xx answer.
    fn send_ack(&mut self, to: Peer, bytes: Vec<u8>, again: bool) {
        self.send(to, bytes, Origin::Ack(self.key()), again);
    }

    /// A response of a server transaction.
    fn send_response(&mut self, to: Peer, resp: &Response, again: bool) {
        let origin = Origin::Response(self.key(), resp.code);
        self.send(to, resp.to_bytes(), origin, again);
    }

    fn event(&mut self, event: TxEvent) {
        self.events.push_back(event);
    }

    fn key(&self) -> TxKey {
        self.key.clone()
    }
}

/// The server transport's note of where a request came from, in its top Via (§18.2.1,
/// RFC 3581): `received=ADDR` when the sent-by host is not the source address, and
/// `rport=PORT` with `received` when the client asked with a bare `rport`. Responses copy
/// the Via, so a phone behind NAT learns its public address; they always go back to the
/// source address and port (symmetric response, as RFC 3581 asks for `rport`).
fn stamp_source(req: &mut Request, from: Peer) {
    let Some(top) = req.headers.first_mut("Via") else {
        return;
    };
    let Some(via) = Via::parse(top) else {
        return;
    };
    let ip = from.addr.ip();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let wants_rport = via.param("rport") == Some("");
    let host_differs = host.parse::<std::net::IpAddr>().ok() != Some(ip);
    if !(wants_rport || host_differs) || via.param("received").is_some() {
        return;
    }
    let mut parts: Vec<String> = top.split(';').map(str::to_string).collect();
    for p in parts.iter_mut().skip(1) {
        if p.trim().eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", from.addr.port());
        }
    }
    parts.push(format!("received={ip}"));
    *top = parts.join(";");
}

/// One transaction of any of the four kinds. Serializing it is taking its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transaction {
    ClientInvite(ClientInviteTransaction),
    ClientNonInvite(ClientNonInviteTransaction),
    ServerInvite(ServerInviteTransaction),
    ServerNonInvite(ServerNonInviteTransaction),
}

impl Transaction {
    fn deadline(&self, cfg: &TimerConfig) -> Option<Deadline> {
        match self {
            Self::ClientInvite(t) => t.deadline(cfg),
            Self::ClientNonInvite(t) => t.deadline(cfg),
            Self::ServerInvite(t) => t.deadline(cfg),
            Self::ServerNonInvite(t) => t.deadline(cfg),
        }
    }

    fn on_timer(&mut self, timer: Timer, now: UnixMillis, out: &mut Out) {
        match self {
            Self::ClientInvite(t) => t.on_timer(timer, now, out),
            Self::ClientNonInvite(t) => t.on_timer(timer, now, out),
            Self::ServerInvite(t) => t.on_timer(timer, now, out),
            Self::ServerNonInvite(t) => t.on_timer(timer, now, out),
        }
    }

    fn on_transport_error(&mut self, now: UnixMillis, out: &mut Out) {
        match self {
            Self::ClientInvite(t) => t.on_transport_error(now, out),
            Self::ClientNonInvite(t) => t.on_transport_error(now, out),
            Self::ServerInvite(t) => t.on_transport_error(now, out),
            Self::ServerNonInvite(t) => t.on_transport_error(now, out),
        }
    }

    /// The request that opened the transaction.
    pub fn request(&self) -> &Request {
        match self {
            Self::ClientInvite(t) => &t.request,
            Self::ClientNonInvite(t) => &t.request,
            Self::ServerInvite(t) => &t.request,
            Self::ServerNonInvite(t) => &t.request,
        }
    }

    /// The state's name, as in the RFC figures.
    pub fn state_name(&self) -> &'static str {
        match self {
            Self::ClientInvite(t) => t.state.name(),
            Self::ClientNonInvite(t) => t.state.name(),
            Self::ServerInvite(t) => t.state.name(),
            Self::ServerNonInvite(t) => t.state.name(),
        }
    }

    pub fn is_terminated(&self) -> bool {
        match self {
            Self::ClientInvite(t) => t.state == ClientInviteState::Terminated,
            Self::ClientNonInvite(t) => t.state == ClientNonInviteState::Terminated,
            Self::ServerInvite(t) => t.state == ServerInviteState::Terminated,
            Self::ServerNonInvite(t) => t.state == ServerNonInviteState::Terminated,
        }
    }

    /// Whether the transaction still waits for its final response: a client transaction
    /// that has not heard one, a server transaction that has not sent one. The other states
    /// only absorb retransmissions (Timers D, I, J, K, L, M), which is no reason for a
    /// draining node to stay.
    pub fn awaits_final_response(&self) -> bool {
        match self {
            Self::ClientInvite(t) => matches!(
                t.state,
                ClientInviteState::Calling | ClientInviteState::Proceeding
            ),
            Self::ClientNonInvite(t) => matches!(
                t.state,
                ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
            ),
            Self::ServerInvite(t) => t.state == ServerInviteState::Proceeding,
            Self::ServerNonInvite(t) => matches!(
                t.state,
                ServerNonInviteState::Trying | ServerNonInviteState::Proceeding
            ),
        }
    }

    /// States in which only the TU (or the network) can move the transaction on, so that it
    /// may rightly have no deadline: a server transaction waiting for the TU's answer, and a
    /// client INVITE transaction that got a provisional response (Timer C is the TU's).
    pub fn awaits_tu(&self) -> bool {
        match self {
            Self::ClientInvite(t) => t.state == ClientInviteState::Proceeding,
            Self::ClientNonInvite(_) => false,
            Self::ServerInvite(t) => t.state == ServerInviteState::Proceeding,
            Self::ServerNonInvite(t) => matches!(
                t.state,
                ServerNonInviteState::Trying | ServerNonInviteState::Proceeding
            ),
        }
    }
}

/// A transaction with its key: what a node persists and another node restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub key: TxKey,
    pub transaction: Transaction,
}

/// All transactions of a node, matched by key, with their timers in one index.
#[derive(Debug, Default)]
pub struct TransactionLayer {
    config: TimerConfig,
    /// Every transaction, with the index of all their deadlines.
    transactions: Table,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl TransactionLayer {
    pub fn new(config: TimerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// Whether some transaction still waits for its final response.
    pub fn any_awaiting_final_response(&self) -> bool {
        self.transactions
            .iter()
            .any(|(_, t)| t.awaits_final_response())
    }

    pub fn is_empty(&self) -> bool {
        self.transactions.len() == 0
    }

    pub fn get(&self, key: &TxKey) -> Option<&Transaction> {
        self.transactions.get(key)
    }

    /// Every live transaction, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&TxKey, &Transaction)> {
        self.transactions.iter()
    }

    /// The next deadline of any transaction.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.transactions.next_deadline()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// Runs `f` on transaction `key` with an output sink, then reschedules it and removes it
    /// if it terminated.
    fn step<R>(
        &mut self,
        key: &TxKey,
        f: impl FnOnce(&mut Transaction, &mut Out) -> R,
    ) -> Option<R> {
        let tx = self.transactions.get_mut(key)?;
        let call_id = tx.request().headers.get("Call-ID").map(str::to_string);
        let mut out = Out {
            key,
            call_id: call_id.as_deref(),
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let r = f(tx, &mut out);
        self.reschedule(key);
        Some(r)
    }

    fn reschedule(&mut self, key: &TxKey) {
        let Some(tx) = self.transactions.get(key) else {
            return;
        };
        if tx.is_terminated() {
            self.transactions.remove(key);
            self.events
                .push_back(TxEvent::Terminated { key: key.clone() });
            return;
        }
        let at = tx.deadline(&self.config).map(|(at, _)| at);
        self.transactions.schedule(key, at);
    }

    fn insert(&mut self, key: TxKey, tx: Transaction) {
        self.transactions.insert(key.clone(), tx);
        self.reschedule(&key);
    }

    /// Fires every timer due at `now`, in (deadline, creation) order; a transaction's own
    /// timers fire in deadline order, ties in the order of [`Timer`].
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        while let Some((at, key)) = self.transactions.first_timer() {
            if at > now {
                break;
            }
            let cfg = self.config;
            let fired = self.step(&key, |tx, out| {
                if let Some((due, timer)) = tx.deadline(&cfg) {
                    if due <= now {
                        tx.on_timer(timer, now, out);
                    }
                }
            });
            if fired.is_none() {
                // Stale index entry; cannot happen, but never loop on it.
                self.transactions.schedule(&key, None);
            }
        }
    }

    /// A message received from `from` (already parsed and validated).
    pub fn handle_message(&mut self, msg: SipMessage, from: Peer, now: UnixMillis) {
        match msg {
            SipMessage::Request(req) => self.handle_request(req, from, now),
            SipMessage::Response(resp) => self.handle_response(resp, from, now),
        }
    }

    fn handle_request(&mut self, mut req: Request, from: Peer, now: UnixMillis) {
        let Some(key) = TxKey::for_request(&req) else {
            return; // validation guarantees a Via; nothing to match otherwise
        };
        stamp_source(&mut req, from);
        if self.transactions.contains(&key) {
            self.step(&key, |tx, out| match tx {
                Transaction::ServerInvite(t) => t.on_request(req, from, now, out),
                Transaction::ServerNonInvite(t) => t.on_request(&req, out),
                _ => {}
            });
            return;
        }
        if req.method == Method::Ack {
            self.events.push_back(TxEvent::Ack { request: req, from });
            return;
        }
        let tx = if req.method == Method::Invite {
            Transaction::ServerInvite(ServerInviteTransaction::new(req.clone(), from, now))
        } else {
            Transaction::ServerNonInvite(ServerNonInviteTransaction::new(req.clone(), from, now))
        };
        self.events.push_back(TxEvent::Request {
            key: key.clone(),
            request: req,
            from,
        });
        self.insert(key, tx);
    }

    fn handle_response(&mut self, resp: Response, from: Peer, now: UnixMillis) {
        let key = TxKey::for_response(&resp);
        match key {
            Some(key) if self.transactions.contains(&key) => {
                self.step(&key, |tx, out| match tx {
                    Transaction::ClientInvite(t) => t.on_response(resp, now, out),
                    Transaction::ClientNonInvite(t) => t.on_response(resp, now, out),
                    _ => {}
                });
            }
            _ => self.events.push_back(TxEvent::StrayResponse {
                response: resp,
                from,
            }),
        }
    }

    /// Starts a client transaction for `req` (its top Via must carry a fresh magic-cookie
    /// branch) and sends the request to `to`.
    pub fn send_request(
        &mut self,
        req: Request,
        to: Peer,
        now: UnixMillis,
    ) -> Result<TxKey, TxError> {
        if req.method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        let key = TxKey::for_outgoing(&req).ok_or(TxError::BadRequest)?;
        if req.headers.get("CSeq").and_then(CSeq::parse).is_none() {
            return Err(TxError::BadRequest);
        }
        if self.transactions.contains(&key) {
            return Err(TxError::DuplicateTransaction);
        }
        self.transmits.push_back(Transmit {
            to,
            bytes: req.to_bytes(),
            call_id: req.headers.get("Call-ID").map(str::to_string),
            origin: Origin::Request(key.clone()),
            retransmission: false,
        });
        let tx = if req.method == Method::Invite {
            Transaction::ClientInvite(ClientInviteTransaction::new(req, to, now))
        } else {
            Transaction::ClientNonInvite(ClientNonInviteTransaction::new(req, to, now))
        };
        self.insert(key.clone(), tx);
        Ok(key)
    }

    /// Sends `resp` through server transaction `key`.
    pub fn send_response(
        &mut self,
        key: &TxKey,
        resp: Response,
        now: UnixMillis,
    ) -> Result<(), TxError> {
        self.step(key, |tx, out| match tx {
            Transaction::ServerInvite(t) => t.send_response(resp, now, out),
            Transaction::ServerNonInvite(t) => t.send_response(resp, now, out),
            _ => Err(TxError::UnknownTransaction),
        })
        .unwrap_or(Err(TxError::UnknownTransaction))
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, stateless responses);
    /// `again` when it is a copy of one sent before (the TU's 2xx retransmissions).
    pub fn send_stateless(&mut self, msg: &SipMessage, to: Peer, again: bool) {
        self.transmits.push_back(Transmit {
            to,
            bytes: msg.to_bytes(),
            call_id: msg.headers().get("Call-ID").map(str::to_string),
            origin: Origin::Stateless,
            retransmission: again,
        });
    }

    /// The last message of transaction `key` really left at `now` (its batch waited for the
    /// store): retransmission intervals count from there, so the first copy and the next
    /// are never closer than the RFC's interval.
    pub fn departed(&mut self, key: &TxKey, now: UnixMillis) {
        self.step(key, |tx, _| {
            let at = match tx {
                Transaction::ClientInvite(t) => &mut t.last_sent_at,
                Transaction::ClientNonInvite(t) => &mut t.last_sent_at,
                Transaction::ServerInvite(t) => &mut t.last_sent_at,
                Transaction::ServerNonInvite(_) => return,
            };
            *at = (*at).max(now);
        });
    }

    /// The transport could not deliver a message of transaction `key` (§17.1.4, §17.2.4).
    pub fn handle_transport_error(&mut self, key: &TxKey, now: UnixMillis) {
        self.step(key, |tx, out| tx.on_transport_error(now, out));
    }

    /// Forgets transaction `key` at once, without sending anything: its last response was
    /// never sent (the store write it depended on failed), so a retransmitted request must
    /// reach the TU again instead of getting that response.
    pub fn abandon(&mut self, key: &TxKey) {
        if self.transactions.remove(key).is_some() {
            self.events
                .push_back(TxEvent::Terminated { key: key.clone() });
        }
    }

    /// The 2xx sent through INVITE server transaction `key` never left (its store write
    /// failed): the transaction goes back to Proceeding, so that the TU can still send a
    /// final response. Returns the withdrawn 2xx; `None` if it is not an INVITE server
    /// transaction in Accepted.
    pub fn withdraw_2xx(&mut self, key: &TxKey, now: UnixMillis) -> Option<Response> {
        self.step(key, |tx, _| match tx {
            Transaction::ServerInvite(t) => t.withdraw_2xx(now),
            _ => None,
        })
        .flatten()
    }

    /// Sends the last response of INVITE server transaction `key` again (its first copy
    /// never left, and over TCP no timer would resend it).
    pub fn resend_response(&mut self, key: &TxKey) {
        self.step(key, |tx, out| {
            if let Transaction::ServerInvite(t) = tx {
                // Its first copy never left: this is no retransmission.
                t.resend_last(out, false);
            }
        });
    }

    /// Forgets the client transaction that sends `req` (whose first copy never left):
    /// nothing of it is retransmitted.
    pub fn abandon_request(&mut self, req: &Request) {
        if let Some(key) = TxKey::for_outgoing(req) {
            self.abandon(&key);
        }
    }

    /// The INVITE server transaction that a CANCEL server transaction cancels (§9.2): same
    /// branch and sent-by, method INVITE.
    pub fn invite_for_cancel(&self, cancel: &TxKey) -> Option<TxKey> {
        let key = TxKey {
            method: Method::Invite,
            ..cancel.clone()
        };
        self.transactions.contains(&key).then_some(key)
    }

    /// A snapshot of transaction `key`.
    pub fn snapshot(&self, key: &TxKey) -> Option<Snapshot> {
        self.transactions.get(key).map(|t| Snapshot {
            key: key.clone(),
            transaction: t.clone(),
        })
    }

    /// Snapshots of every transaction, in creation order (restoring them in this order keeps
    /// the order in which their deadlines fire).
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.transactions
            .iter()
            .map(|(k, t)| Snapshot {
                key: k.clone(),
                transaction: t.clone(),
            })
            .collect()
    }

    /// Loads transactions another node (or this one before a restart) snapshotted, rebuilds
    /// their timers, and fires at once, in order, the deadlines that have already passed.
    pub fn restore(&mut self, snapshots: impl IntoIterator<Item = Snapshot>, now: UnixMillis) {
        for s in snapshots {
            self.insert(s.key, s.transaction);
        }
        self.handle_timeout(now);
    }
}

#[cfg(test)]
mod tests;
