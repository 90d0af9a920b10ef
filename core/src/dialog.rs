//! Dialogs (RFC 3261 §12): the state one side of a B2BUA call keeps about its peer, and the
//! in-dialog requests built from it (§12.2.1.1).

use crate::message::{Headers, Method, NameAddr, Request};
use crate::transaction::{Peer, Transport};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// One dialog: identifiers, sequence numbers, route set and remote target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our From (or To) value without its tag.
    pub local_uri: String,
    /// The peer's From (or To) value without its tag.
    pub remote_uri: String,
    /// CSeq of the last request we sent in this dialog.
    pub local_cseq: u32,
    /// CSeq of the last request the peer sent, once it has sent one.
    pub remote_cseq: Option<u32>,
    /// Route set, in the order requests carry it.
    pub route_set: Vec<String>,
    /// The peer's Contact URI.
    pub remote_target: String,
    /// Where requests go when neither route set nor target names an IP address.
    pub peer: Peer,
}

/// A header value with its `tag` parameter removed.
pub fn strip_tag(value: &str) -> String {
    let Some(gt) = value.rfind('>') else {
        return match value.find(";tag=") {
            Some(i) => value[..i].to_string(),
            None => value.to_string(),
        };
    };
    let (uri, params) = value.split_at(gt + 1);
    let kept: Vec<&str> = params
        .split(';')
        .skip(1)
        .filter(|p| {
            !p.trim()
                .split('=')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("tag"))
        })
        .collect();
    let mut out = uri.to_string();
    for p in kept {
        out.push(';');
        out.push_str(p);
    }
    out
}

/// The URI inside a name-addr value (or the value itself when it does not parse).
pub fn uri_of(value: &str) -> String {
    NameAddr::parse(value).map_or_else(|| value.to_string(), |n| n.uri)
}

/// Where to send a request for `uri`: its host when that is an IP address, its port or
/// 5060, and its transport parameter (UDP by default). `None` for host names: the core does
/// no DNS, so the caller falls back to a known peer address.
pub fn peer_for_uri(uri: &str) -> Option<Peer> {
    let rest = uri.split_once(':')?.1;
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostpart = hostpart.split(['?', '>']).next()?;
    let mut parts = hostpart.split(';');
    let hostport = parts.next()?;
    // The transport parameter (§19.1.1), read from the text: parsing the whole URI for it
    // cost more than the rest of routing a request.
    let transport = parts
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("transport"))
        .map(|(_, v)| v.trim());
    let transport = match transport {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        _ => Transport::Udp,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5060,
    };
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

impl Dialog {
    /// Where the next in-dialog request goes: the first route (loose routing), else the
    /// remote target, else the peer we know.
    pub fn next_hop(&self) -> Peer {
        self.route_set
            .first()
            .map(|r| uri_of(r))
            .or_else(|| Some(self.remote_target.clone()))
            .and_then(|u| peer_for_uri(&u))
            .map(|mut p| {
                // Keep the transport we already talk to this peer over.
                if p.addr == self.peer.addr {
                    p.transport = self.peer.transport;
                }
                p
            })
            .unwrap_or(self.peer)
    }

    /// A new request in this dialog (§12.2.1.1), with a fresh CSeq (the caller persists the
    /// dialog before sending it), the given Via branch and our Contact.
    pub fn request(
        &mut self,
        method: Method,
        via: &str,
        contact: &str,
        max_forwards: u32,
    ) -> Request {
        let cseq = if method == Method::Ack || method == Method::Cancel {
            self.local_cseq
        } else {
            self.local_cseq += 1;
            self.local_cseq
        };
        self.request_with_cseq(method, cseq, via, contact, max_forwards)
    }

    /// An in-dialog request with an explicit CSeq number (for the ACK of a 2xx, which takes
    /// the INVITE's number).
    pub fn request_with_cseq(
        &self,
        method: Method,
        cseq: u32,
        via: &str,
        contact: &str,
        max_forwards: u32,
    ) -> Request {
        let mut h = Headers::default();
        h.push("Via", via);
        h.push("Max-Forwards", max_forwards.to_string());
        h.push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        match &self.remote_tag {
            Some(t) => h.push("To", format!("{};tag={t}", self.remote_uri)),
            None => h.push("To", self.remote_uri.clone()),
        }
        h.push("Call-ID", self.call_id.clone());
        h.push("CSeq", format!("{cseq} {method}"));
        for r in &self.route_set {
            h.push("Route", r.clone());
        }
        if method != Method::Ack && method != Method::Cancel && method != Method::Bye {
            h.push("Contact", contact);
        }
        Request {
            method,
            uri: self.remote_target.clone(),
            headers: h,
            body: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_tag_keeps_other_params() {
        assert_eq!(
            strip_tag("\"A\" <sip:a@b;tag=u>;tag=x;foo=1"),
            "\"A\" <sip:a@b;tag=u>;foo=1"
        );
        assert_eq!(strip_tag("sip:a@b;tag=x"), "sip:a@b");
    }

    #[test]
    fn peers_from_uris() {
        let p = peer_for_uri("sip:bob@127.0.0.1:5080;transport=tcp").unwrap();
        assert_eq!(p.addr, "127.0.0.1:5080".parse().unwrap());
        assert_eq!(p.transport, Transport::Tcp);
        let p = peer_for_uri("sip:[::1]").unwrap();
        assert_eq!(p.addr, "[::1]:5060".parse().unwrap());
        assert!(peer_for_uri("sip:bob@example.com").is_none());
        let p = peer_for_uri("sip:10.0.0.1;lr;Transport=TLS?Subject=x").unwrap();
        assert_eq!(p.transport, Transport::Tls);
        let p = peer_for_uri("<sip:bob@10.0.0.1:5070;maddr=x>;transport=tcp").unwrap();
        assert_eq!(p.addr, "10.0.0.1:5070".parse().unwrap());
        assert_eq!(
            p.transport,
            Transport::Udp,
            "a header parameter is not the URI's"
        );
    }
}
