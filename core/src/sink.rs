//! What the node's logic (the B2BUA, the registrar glue) talks to: the transaction layer
//! it sends through, the ids and addresses it puts on the wire, and the step's outputs
//! (store writes, stray transmits, counters, diagnostics) until the node closes the step
//! into a [`Batch`]. The B2BUA modules see the node only through this, so neither imports
//! the other.

use crate::batch::Batch;
use crate::config::Config;
use crate::ids::IdGen;
use crate::message::{response_to, Limits, Request, Response, SipMessage};
use crate::metrics::Metrics;
use crate::store::StoreWrite;
use crate::transaction::{Peer, TransactionLayer, Transmit, Transport, TxKey};
use crate::UnixMillis;
use std::collections::VecDeque;
use std::net::SocketAddr;

pub(crate) struct Sink {
    pub(crate) cfg: Config,
    pub(crate) limits: Limits,
    /// What goes on the wire as ours (Via sent-by, Contact): the bound address, or the
    /// address a load balancer or NAT in front of the node is reached at.
    pub(crate) advertise: SocketAddr,
    pub(crate) node_id: u16,
    /// In a cluster: this node's incarnation (stamped on the calls it owns) and the A-leg
    /// index records (`leg/`) are written; 0 and none on a single node.
    pub(crate) incarnation: u64,
    pub(crate) clustered: bool,
    pub(crate) ids: IdGen,
    pub(crate) tx: TransactionLayer,
    pub(crate) writes: Vec<StoreWrite>,
    /// The current step's transmits reveal its deletes (see [`Batch::reveals_deletes`]).
    pub(crate) reveals_deletes: bool,
    /// The current step's claims: see [`Batch::claims`].
    pub(crate) claims: Vec<String>,
    /// Transmits of no transaction (answers to unparsable messages).
    pub(crate) extra_transmits: Vec<Transmit>,
    pub(crate) metrics: Metrics,
    pub(crate) diagnostics: VecDeque<String>,
}

impl Sink {
    pub(crate) fn new(cfg: Config, advertise: SocketAddr, node_id: u16, seed: u64) -> Self {
        Self {
            limits: cfg.parse_limits(),
            tx: TransactionLayer::new(cfg.timers),
            cfg,
            advertise,
            node_id,
            incarnation: 0,
            clustered: false,
            ids: IdGen::new(node_id, seed),
            writes: Vec::new(),
            reveals_deletes: false,
            claims: Vec::new(),
            extra_transmits: Vec::new(),
            metrics: Metrics::default(),
            diagnostics: VecDeque::new(),
        }
    }

    /// A top Via of ours with a fresh branch.
    pub(crate) fn via(&mut self, transport: Transport) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            transport_token(transport),
            self.advertise,
            self.ids.branch()
        )
    }

    /// Our Contact for a leg of call `call` over `transport`: its user part is the node
    /// token a load balancer routes the dialog's requests by ([`crate::cluster::token`]).
    pub(crate) fn contact(&self, transport: Transport, call: &str) -> String {
        let user = crate::cluster::token::contact_user(self.node_id, self.incarnation, call);
        match transport {
            Transport::Udp => format!("<sip:{user}@{}>", self.advertise),
            t => format!(
                "<sip:{user}@{};transport={}>",
                self.advertise,
                transport_token(t).to_ascii_lowercase()
            ),
        }
    }

    /// Answers server transaction `key` (a To tag is added when the request has none).
    pub(crate) fn reply(
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
    /// counted and reported (see `Node::poll_diagnostic`).
    pub(crate) fn respond(&mut self, key: &TxKey, resp: Response, now: UnixMillis) {
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

    /// Sends `resp`, a response made earlier (a 2xx owed to an INVITE), through server
    /// transaction `key` as the answer to `req`, with `req`'s Vias (§8.2.6.2): `req` may be
    /// another copy of that INVITE (a phone's failover copy, one a member forwarded) whose
    /// Vias differ from those of the copy first answered (cluster-chaos seed 297: a
    /// tombstone's owed 2xx went out with the forwarding member's Via still on top).
    pub(crate) fn respond_copy(
        &mut self,
        key: &TxKey,
        mut resp: Response,
        req: &Request,
        now: UnixMillis,
    ) {
        let is_via = |h: &crate::message::Header| h.name.eq_ignore_ascii_case("Via");
        let rest = std::mem::take(&mut resp.headers.0);
        resp.headers.0 = req
            .headers
            .0
            .iter()
            .filter(|h| is_via(h))
            .cloned()
            .chain(rest.into_iter().filter(|h| !is_via(h)))
            .collect();
        self.respond(key, resp, now);
    }

    /// Sends a message outside any transaction (an ACK for a 2xx).
    pub(crate) fn send_stateless(&mut self, msg: &SipMessage, to: Peer) {
        self.tx.send_stateless(msg, to, false);
    }

    /// Sends again a message sent before outside any transaction (the TU's 2xx
    /// retransmissions, §13.3.1.4).
    pub(crate) fn resend_stateless(&mut self, msg: &SipMessage, to: Peer) {
        self.tx.send_stateless(msg, to, true);
    }

    /// Closes the current step: its writes and transmits become one batch (the node gives
    /// it its id).
    pub(crate) fn close_step(&mut self) -> Option<Batch> {
        let mut transmits = std::mem::take(&mut self.extra_transmits);
        while let Some(t) = self.tx.poll_transmit() {
            transmits.push(t);
        }
        let writes = std::mem::take(&mut self.writes);
        let reveals_deletes = std::mem::take(&mut self.reveals_deletes);
        let claims = std::mem::take(&mut self.claims);
        (!writes.is_empty() || !transmits.is_empty()).then_some(Batch {
            id: Default::default(),
            writes,
            transmits,
            reveals_deletes,
            report: false,
            incarnation: self.incarnation,
            heard: 0,
            claims,
        })
    }
}

pub(crate) fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Ws => "WS",
        Transport::Wss => "WSS",
    }
}
