//! Forwarding to a live owner: an in-dialog request for a call that another live member
//! runs (a phone still talking to the member that ran the call before that member started
//! again, or a load balancer's guess) is passed to the owner as a stateless proxy passes
//! it (RFC 3261 §16.11), and the owner's responses come back the same way.
//!
//! On the way there: our Via on top, with a branch derived from the request's own (so a
//! retransmission reaches the owner's same transaction, and a CANCEL the INVITE's), the
//! sender's address in its Via (`received` and `rport`, RFC 3581: where the response
//! goes), Max-Forwards one less. Our server transaction is given up: each retransmission
//! is forwarded afresh. On the way back: a response whose top Via is one of our
//! forwarding Vias loses it and goes to the address the next Via names.

use super::Node;
use crate::message::{Request, Response, SipMessage, Via};
use crate::transaction::{Peer, Transport, TxKey};
use crate::UnixMillis;
use std::net::{IpAddr, SocketAddr};

use crate::ids::FORWARD_BRANCH as MARK;

impl Node {
    /// Forwards `req` (its server transaction `key`, from `from`) to the owner at `to`.
    pub(super) fn forward(
        &mut self,
        key: &TxKey,
        mut req: Request,
        from: Peer,
        to: SocketAddr,
        now: UnixMillis,
    ) {
        let hops = crate::b2bua::max_forwards(&req);
        if hops == 0 {
            return self.sink.reply(key, &req, 483, None, &[], now);
        }
        req.headers.set("Max-Forwards", (hops - 1).to_string());
        if let Some(top) = req.headers.first_mut("Via") {
            let kept: Vec<&str> = top
                .split(';')
                .filter(|p| {
                    let name = p.split('=').next().unwrap_or("").trim();
                    !name.eq_ignore_ascii_case("received") && !name.eq_ignore_ascii_case("rport")
                })
                .collect();
            *top = format!(
                "{};received={};rport={}",
                kept.join(";"),
                from.addr.ip(),
                from.addr.port()
            );
        }
        let branch = req
            .headers
            .get("Via")
            .and_then(Via::parse)
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let ours = format!(
            "SIP/2.0/UDP {};branch={MARK}{:016x}",
            self.sink.advertise,
            crate::cluster::hrw::key_hash(&format!("{}/{branch}", self.sink.node_id))
        );
        req.headers.push_front("Via", ours);
        self.sink.tx.abandon(key);
        self.sink.metrics.forwarded += 1;
        let owner = Peer {
            transport: Transport::Udp,
            addr: to,
        };
        self.sink.send_stateless(&SipMessage::Request(req), owner);
    }

    /// A response outside any transaction of ours: when its top Via is one of our
    /// forwarding Vias, it goes on to the sender of the request. Whether it was one.
    pub(super) fn forward_response(&mut self, resp: &Response) -> bool {
        let top = resp.headers.get("Via").and_then(Via::parse);
        let ours = top.is_some_and(|v| {
            v.branch().is_some_and(|b| b.starts_with(MARK))
                && v.sent_by() == self.sink.advertise.to_string()
        });
        if !ours {
            return false;
        }
        let mut resp = resp.clone();
        pop_top_via(&mut resp);
        let Some(next) = resp.headers.get("Via").and_then(Via::parse) else {
            return true;
        };
        let ip = next
            .param("received")
            .and_then(|r| r.parse::<IpAddr>().ok())
            .or_else(|| next.host.trim_matches(['[', ']']).parse().ok());
        let port = next
            .param("rport")
            .and_then(|p| p.parse::<u16>().ok())
            .or(next.port)
            .unwrap_or(5060);
        let transport = match next.transport.as_str() {
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ => Transport::Udp,
        };
        if let Some(ip) = ip {
            let to = Peer {
                transport,
                addr: SocketAddr::new(ip, port),
            };
            self.sink.metrics.forwarded_responses += 1;
            self.sink.send_stateless(&SipMessage::Response(resp), to);
        }
        true
    }
}

/// Removes the first Via value (a header line may carry several, comma-separated).
fn pop_top_via(resp: &mut Response) {
    let h = &mut resp.headers.0;
    let Some(i) = h.iter().position(|h| h.name.eq_ignore_ascii_case("Via")) else {
        return;
    };
    let rest = h
        .get(i)
        .and_then(|v| v.value.split_once(','))
        .map(|(_, rest)| rest.trim().to_string())
        .filter(|rest| !rest.is_empty());
    match (rest, h.get_mut(i)) {
        (Some(rest), Some(via)) => via.value = rest,
        _ => {
            h.remove(i);
        }
    }
}
