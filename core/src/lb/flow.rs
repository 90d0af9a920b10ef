//! Phones on connections the balancer terminates (TCP, TLS, WebSocket: RFC 7118), while it
//! speaks UDP to the nodes.
//!
//! A response finds its way back by the phone's source address, which the balancer stamps
//! on the phone's Via (`received`, `rport`) and the runtime matches to the connection. A
//! request a node sends to such a phone cannot go by the phone's Contact: a WebSocket
//! client's is `….invalid`, and a TCP phone's may be a port nobody listens on. So the
//! balancer puts itself in the path of what comes back to the phone, with a token that
//! names the connection: in the Record-Route of a dialog's INVITE (both ways: the phone
//! calling, the phone called) and in the Path of a REGISTER (RFC 3327: the node's
//! registrar uses it as the route to the phone). A node's request that routes through the
//! balancer with such a token leaves on that connection. Nothing is kept per call: the
//! token is the connection's address.

use std::net::SocketAddr;

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub addr: SocketAddr,
    /// It came on a connection the balancer holds (see the module doc).
    pub flow: bool,
    /// The node a WebSocket client's cookie names: its new requests go there while it
    /// lives.
    pub pin: Option<u16>,
}

impl Source {
    /// A UDP datagram from `addr`.
    pub fn datagram(addr: SocketAddr) -> Self {
        Self {
            addr,
            flow: false,
            pin: None,
        }
    }

    /// A message on the connection from `addr`.
    pub fn connection(addr: SocketAddr, pin: Option<u16>) -> Self {
        Self {
            addr,
            flow: true,
            pin,
        }
    }
}

const FLOW_PREFIX: &str = "flow-";

/// The user part naming the connection from `addr`: its address in hex, so that any form
/// of address (IPv6 included) is a valid URI user.
pub fn flow_token(addr: SocketAddr) -> String {
    let hex: String = addr
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{FLOW_PREFIX}{hex}")
}

/// The connection a flow token names.
pub fn parse_flow_token(user: &str) -> Option<SocketAddr> {
    let hex = user.strip_prefix(FLOW_PREFIX)?;
    if hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()?.parse().ok()
}

/// The balancer at `me` as a loose route to the connection from `addr`.
pub fn flow_route(me: SocketAddr, addr: SocketAddr) -> String {
    format!("<sip:{}@{me};lr>", flow_token(addr))
}

/// The URI of a Route or Record-Route value (`<sip:…>;params` or a bare URI).
pub(super) fn route_uri(value: &str) -> &str {
    let v = value.trim();
    match v.strip_prefix('<') {
        Some(rest) => rest.split('>').next().unwrap_or(rest),
        None => v.split(';').next().unwrap_or(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        for a in ["127.0.0.1:40000", "[2001:db8::1]:5061"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(parse_flow_token(&flow_token(addr)), Some(addr));
        }
        for bad in ["flow-", "flow-zz", "flow-313", "alice", "flow-3132"] {
            assert_eq!(parse_flow_token(bad), None, "{bad}");
        }
        let me: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let r = flow_route(me, "1.2.3.4:5".parse().unwrap());
        assert!(r.ends_with("@10.0.0.1:5060;lr>"), "{r}");
        assert_eq!(route_uri(&r), &r[1..r.len() - 1]);
    }
}
