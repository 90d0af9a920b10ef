//! Who talks to whom and which transaction a message belongs to: transports, peers, and
//! the transaction key of §17.1.3 and §17.2.3.

use crate::ids::BRANCH_MAGIC_COOKIE;
use crate::message::{header_param, CSeq, Method, Request, Response, Via};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

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

/// The Via a server transaction is keyed by: the top one, or on a request a cluster member
/// forwarded to its call's owner (that member's Via on top: `node::forward`) the one under
/// it, so that copies of one request forwarded by different members are one transaction
/// at the owner, not two with one CSeq (two final responses for one request: the second
/// member's copy got 500 Out Of Order, the first's its real answer).
fn keyed_via(req: &Request) -> Option<Via<'_>> {
    let top = Via::parse(req.headers.get("Via")?)?;
    if !top.is_forwarding() {
        return Some(top);
    }
    let under = req
        .headers
        .get_all("Via")
        .flat_map(|v| v.split(','))
        .nth(1)
        .and_then(|v| Via::parse(v.trim()));
    Some(under.unwrap_or(top))
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
        let via = keyed_via(req)?;
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
    pub(super) fn for_outgoing(req: &Request) -> Option<TxKey> {
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
