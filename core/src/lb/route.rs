//! Routing one datagram (see the module doc of [`super`]).

use super::flow::{flow_route, parse_flow_token, route_uri, Source};
use super::health::{Probes, PROBE_BRANCH};
use super::pool::Pool;
use crate::cluster::token::{node_of_branch, parse_contact_user};
use crate::map::HashMap;
use crate::message::{
    error_response_from_raw, parse_datagram, response_to, validate_as_proxy, Action, Limits,
    Method, Request, Response, SipMessage, Via,
};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// The branch prefix of the balancer's own Via on what it forwards.
const LB_BRANCH: &str = "z9hG4bKlb";
/// How long the node of an INVITE is remembered for its CANCEL and ACK: 64·T1.
const REMEMBER_MS: u64 = 32_000;
/// At most this many remembered INVITEs (the oldest go first).
const REMEMBER_MAX: usize = 200_000;

/// Which new requests go by their source address instead of their Call-ID: those of
/// `methods`, and all from a source in `prefixes` (CIDR), so that a phone behind NAT keeps
/// one node for its registrations and calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Affinity {
    pub methods: Vec<String>,
    pub prefixes: Vec<String>,
}

impl Affinity {
    fn by_source(&self, method: &Method, ip: IpAddr) -> bool {
        self.methods.iter().any(|m| m == method.as_str())
            || self.prefixes.iter().any(|p| in_prefix(p, ip))
    }
}

/// Whether `ip` is in `prefix` (`10.0.0.0/8`, `2001:db8::/32`, or one address).
fn in_prefix(prefix: &str, ip: IpAddr) -> bool {
    let (net, len) = match prefix.split_once('/') {
        Some((n, l)) => (n, l.parse::<u32>().ok()),
        None => (prefix, None),
    };
    match (net.parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(n)), IpAddr::V4(a)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (Ok(IpAddr::V6(n)), IpAddr::V6(a)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What the balancer did, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LbMetrics {
    pub requests_forwarded: u64,
    pub responses_forwarded: u64,
    /// New requests answered 503: no node takes them.
    pub no_node: u64,
    /// Messages refused by the parser or validator, by rule.
    pub rejected: BTreeMap<String, u64>,
    /// Messages dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

/// The balancer: its address, its nodes and their probes, its routing rules.
#[derive(Debug, Clone)]
pub struct Balancer {
    me: SocketAddr,
    pub pool: Pool,
    pub probes: Probes,
    affinity: Affinity,
    limits: Limits,
    /// Call-ID → (node, remembered until) for INVITEs, and their order of expiry.
    invites: HashMap<String, (u16, UnixMillis)>,
    expiry: VecDeque<(UnixMillis, String)>,
    pub metrics: LbMetrics,
}

impl Balancer {
    pub fn new(me: SocketAddr, pool: Pool, affinity: Affinity, limits: Limits) -> Self {
        Self {
            me,
            pool,
            probes: Probes::default(),
            affinity,
            limits,
            invites: HashMap::default(),
            expiry: VecDeque::new(),
            metrics: LbMetrics::default(),
        }
    }

    /// The largest message it takes (a stream's framer refuses larger ones).
    pub fn max_message(&self) -> usize {
        self.limits.max_message_size
    }

    /// Where datagram `bytes` from `from` goes at `now` (`None`: nowhere; dropped and
    /// counted, or a probe's answer taken in).
    pub fn handle_datagram(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now: UnixMillis,
    ) -> Option<Out> {
        self.handle(bytes, Source::datagram(from), now)
    }

    /// Where message `bytes` from `src` (a datagram, or a message on a connection the
    /// balancer holds) goes at `now`. An `Out` whose address is a connection's leaves on it.
    pub fn handle(&mut self, bytes: &[u8], src: Source, now: UnixMillis) -> Option<Out> {
        let from = src.addr;
        let msg = parse_datagram(bytes, &self.limits)
            .and_then(|m| validate_as_proxy(&m, &self.limits).map(|()| m));
        match msg {
            Ok(SipMessage::Request(r)) => self.on_request(r, src, now),
            Ok(SipMessage::Response(r)) => self.on_response(r, bytes, now),
            Err(rej) => {
                *self
                    .metrics
                    .rejected
                    .entry(format!("{:?}", rej.rule))
                    .or_default() += 1;
                match rej.action {
                    Action::Reply(_) => error_response_from_raw(bytes, &rej, "lb")
                        .map(|bytes| Out { to: from, bytes }),
                    Action::Drop => None,
                }
            }
        }
    }

    fn drop(&mut self, why: &'static str) -> Option<Out> {
        *self.metrics.dropped.entry(why).or_default() += 1;
        None
    }

    /// A stateless answer from the balancer itself.
    fn answer(req: &Request, code: u16, headers: &[(&str, &str)], from: SocketAddr) -> Out {
        let mut resp = response_to(req, code, None, "lb");
        for (n, v) in headers {
            resp.headers.push(n, *v);
        }
        Out {
            to: from,
            bytes: resp.to_bytes(),
        }
    }

    fn on_request(&mut self, mut req: Request, src: Source, now: UnixMillis) -> Option<Out> {
        let from = src.addr;
        // A member's own request: from a member's address, or (a member the pool does not
        // list yet, such as one just restarted) with its Via naming us, as a member's does
        // (it advertises the balancer); sent to a member as a phone's, it would come back
        // to the member that sent it.
        let top = req.headers.get("Via").unwrap_or("");
        let via = Via::parse(top);
        if self.pool.is_node_addr(from) || via.as_ref().is_some_and(|v| self.names_me(v)) {
            return self.relay_for_node(req);
        }
        // What the new branch is derived from (the client's branch and sent-by).
        let hash_of = via.map(|v| format!("{}|{}", v.branch().unwrap_or(top), v.sent_by()));
        let mf = req
            .headers
            .get("Max-Forwards")
            .map(|v| v.trim().parse::<u32>());
        match mf {
            Some(Ok(0)) => return Some(Self::answer(&req, 483, &[], from)),
            Some(Ok(n)) => req.headers.set("Max-Forwards", (n - 1).to_string()),
            _ => {}
        }
        // A route through us (a flow's Record-Route in the phone's route set) is done.
        self.pop_my_route(&mut req);
        let Some(node) = self.pick(&req, src, now) else {
            if req.method == Method::Ack {
                return self.drop("ACK with no node");
            }
            self.metrics.no_node += 1;
            return Some(Self::answer(&req, 503, &[("Retry-After", "5")], from));
        };
        let addr = self.pool.node(node)?.addr;
        self.pool.count_routed(node);
        let Some(hash_of) = hash_of else {
            return self.drop("request with an unparsable Via");
        };
        stamp_source(req.headers.first_mut("Via")?, from);
        let branch = crate::cluster::hrw::key_hash(hash_of.as_bytes());
        req.headers.push_front(
            "Via",
            format!("SIP/2.0/UDP {};branch={LB_BRANCH}{branch:x}", self.me),
        );
        if src.flow {
            self.route_back_through_me(&mut req, src.addr);
        }
        self.metrics.requests_forwarded += 1;
        Some(Out {
            to: addr,
            bytes: req.to_bytes(),
        })
    }

    /// A node's own request (one opening a dialog with a callee, sent through the balancer
    /// as its outbound proxy) goes on to its Request-URI, from the balancer's address,
    /// with nothing added: the node's Via already names the balancer (it advertises it)
    /// and carries the node's token in its branch, so the callee's responses come here
    /// and go to that node, or to its call's adopter once it is dead.
    fn relay_for_node(&mut self, mut req: Request) -> Option<Out> {
        match req
            .headers
            .get("Max-Forwards")
            .map(|v| v.trim().parse::<u32>())
        {
            Some(Ok(0)) => return self.drop("node request with Max-Forwards 0"),
            Some(Ok(n)) => req.headers.set("Max-Forwards", (n - 1).to_string()),
            _ => {}
        }
        // Routed through us to a phone's connection (a flow's Path or Record-Route), or on
        // to the next route, or to the Request-URI.
        let flow = self
            .pop_my_route(&mut req)
            .and_then(|user| parse_flow_token(&user));
        let to = match flow {
            Some(addr) => {
                self.route_back_through_me(&mut req, addr);
                addr
            }
            None => {
                let next = req.headers.get("Route").map(route_uri);
                let Some(to) = crate::dialog::peer_for_uri(next.unwrap_or(&req.uri)) else {
                    return self.drop("node request to no address");
                };
                to.addr
            }
        };
        self.metrics.requests_forwarded += 1;
        Some(Out {
            to,
            bytes: req.to_bytes(),
        })
    }

    /// Removes the top Route if it names this balancer (RFC 3261 §16.4); the user part of
    /// its URI (a flow token, or empty).
    fn pop_my_route(&self, req: &mut Request) -> Option<String> {
        let top = req.headers.get("Route")?;
        let uri = route_uri(top);
        let peer = crate::dialog::peer_for_uri(uri)?;
        if peer.addr != self.me {
            return None;
        }
        let user = uri_user(uri).unwrap_or("").to_string();
        let i = req.headers.0.iter().position(|h| h.name == "Route")?;
        req.headers.0.remove(i);
        Some(user)
    }

    /// What comes back to the phone on connection `addr` must come through us (see
    /// [`super::flow`]): a dialog's INVITE records the route, a REGISTER the path.
    fn route_back_through_me(&self, req: &mut Request, addr: SocketAddr) {
        let route = flow_route(self.me, addr);
        match req.method {
            Method::Invite if !has_to_tag(req) => req.headers.push_front("Record-Route", route),
            Method::Register => req.headers.push_front("Path", route),
            _ => {}
        }
    }

    /// Whether a request's top Via `v` names this balancer.
    fn names_me(&self, v: &Via) -> bool {
        let host = v.host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>().ok() == Some(self.me.ip()) && v.port_or_default() == self.me.port()
    }

    /// The node for request `req` from `src` (see the module doc).
    fn pick(&mut self, req: &Request, src: Source, now: UnixMillis) -> Option<u16> {
        let ip = src.addr.ip();
        let call_id = req.headers.get("Call-ID").unwrap_or("");
        if let Some(t) = uri_user(&req.uri).and_then(parse_contact_user) {
            return self.pool.for_dialog(t.node, t.incarnation, t.call);
        }
        if matches!(req.method, Method::Cancel | Method::Ack) {
            self.forget_expired(now);
            if let Some((node, _)) = self.invites.get(call_id) {
                if self.pool.alive(*node) {
                    return Some(*node);
                }
            }
        }
        if req.method == Method::Invite && !has_to_tag(req) {
            // A retransmitted INVITE goes where its first copy went while that node (that
            // incarnation of it) lives, in the pool or not: a pool that changed meanwhile
            // (a node back and ramping up, one its probes lost) must not make two calls of
            // one INVITE (lb-partition-node seed 195: a node cut off from the balancer
            // answered after another had refused the copy).
            self.forget_expired(now);
            if let Some((node, _)) = self.invites.get(call_id) {
                if self.pool.alive(*node) {
                    return Some(*node);
                }
            }
        }
        if has_to_tag(req) || req.method == Method::Ack {
            // In a dialog, but not one of ours by its URI: the call's rendezvous choice.
            return self.pool.for_unknown(call_id);
        }
        let pinned = src.pin.filter(|n| self.pool.alive(*n));
        let node = if let Some(n) = pinned {
            Some(n)
        } else if self.affinity.by_source(&req.method, ip) {
            self.pool.for_new(&ip.to_string(), now)
        } else {
            self.pool.for_new(call_id, now)
        }?;
        if req.method == Method::Invite {
            self.remember(call_id, node, now);
        }
        Some(node)
    }

    fn remember(&mut self, call_id: &str, node: u16, now: UnixMillis) {
        self.forget_expired(now);
        if self.expiry.len() >= REMEMBER_MAX {
            if let Some((_, old)) = self.expiry.pop_front() {
                self.invites.remove(&old);
            }
        }
        let until = now + REMEMBER_MS;
        if self
            .invites
            .insert(call_id.to_string(), (node, until))
            .is_none()
        {
            self.expiry.push_back((until, call_id.to_string()));
        }
    }

    fn forget_expired(&mut self, now: UnixMillis) {
        while let Some((until, _)) = self.expiry.front() {
            if *until > now {
                break;
            }
            if let Some((_, id)) = self.expiry.pop_front() {
                if self.invites.get(&id).is_some_and(|e| e.1 <= now) {
                    self.invites.remove(&id);
                }
            }
        }
    }

    fn on_response(&mut self, mut resp: Response, raw: &[u8], now: UnixMillis) -> Option<Out> {
        let Some(top) = resp.headers.get("Via").and_then(Via::parse) else {
            return self.drop("response without a Via");
        };
        let branch = top.branch().unwrap_or("");
        if branch.starts_with(PROBE_BRANCH) {
            let branch = branch.to_string();
            self.probes
                .handle_answer(&mut self.pool, &branch, resp.code, now);
            return None;
        }
        if branch.starts_with(LB_BRANCH) {
            if !self.names_me(&top) {
                return self.drop("response with another balancer's Via");
            }
            // Ours: remove our Via, send to the client's source (§18.2.2, RFC 3581).
            if let Some(i) = resp.headers.0.iter().position(|h| h.name == "Via") {
                resp.headers.0.remove(i);
            }
            let Some(to) = resp
                .headers
                .get("Via")
                .and_then(crate::message::response_target)
            else {
                return self.drop("response with no client Via to send to");
            };
            self.metrics.responses_forwarded += 1;
            return Some(Out {
                to,
                bytes: resp.to_bytes(),
            });
        }
        // A response to a node's request: to that node, or its call's adopter.
        let Some(node) = node_of_branch(branch) else {
            return self.drop("response to no one of ours");
        };
        let call_id = resp.headers.get("Call-ID").unwrap_or("");
        let target = self.pool.for_dialog(node, 0, call_id)?;
        let to = self.pool.node(target)?.addr;
        self.metrics.responses_forwarded += 1;
        Some(Out {
            to,
            bytes: raw.to_vec(),
        })
    }
}

/// The user part of a SIP URI (`sip:user@host…`), without parsing the rest.
fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let end = rest.find(['@', ';', '?', '>']).unwrap_or(rest.len());
    rest[end..].starts_with('@').then(|| &rest[..end])
}

/// Records where a request came from on its top Via (`received`, and `rport` always).
fn stamp_source(top: &mut String, from: SocketAddr) {
    use std::fmt::Write;
    let mut stamped = String::with_capacity(top.len() + 40);
    for p in top.split(';') {
        let name = p.split('=').next().unwrap_or("").trim();
        if !(name.eq_ignore_ascii_case("rport") || name.eq_ignore_ascii_case("received")) {
            stamped.push_str(p);
            stamped.push(';');
        }
    }
    let _ = write!(stamped, "received={};rport={}", from.ip(), from.port());
    *top = stamped;
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;

/// Whether `req` is in a dialog (its To has a tag).
fn has_to_tag(req: &Request) -> bool {
    req.headers
        .get("To")
        .and_then(|t| crate::message::header_param(t, "tag"))
        .is_some_and(|t| !t.is_empty())
}
