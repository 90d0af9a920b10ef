//! Every state × event of the four machines (RFC 3261 Figures 5–8, RFC 6026 Figures 5 and
//! 7), with exact retransmission schedules, over UDP and TCP, in virtual time.

use super::*;
use crate::message::{parse_datagram, response_to, Limits};

mod restore;
mod tables;

const T0: UnixMillis = 1_700_000_000_000;

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: "127.0.0.1:5080".parse().unwrap(),
    }
}

fn request(method: &str, branch: &str) -> Request {
    let text = format!(
        "{method} sip:bob@127.0.0.1:5080 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>\r\n\
         Call-ID: c1@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match parse_datagram(text.as_bytes(), &Limits::default()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn reply(req: &Request, code: u16) -> Response {
    response_to(req, code, None, "b1")
}

/// First line of each transmit, for compact assertions.
fn lines(layer: &mut TransactionLayer) -> Vec<String> {
    std::iter::from_fn(|| layer.poll_transmit())
        .map(|t| {
            String::from_utf8_lossy(&t.bytes)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn events(layer: &mut TransactionLayer) -> Vec<TxEvent> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

/// Drives timers until `until`, returning (time since T0, first line) of every transmit.
fn drive(layer: &mut TransactionLayer, until: UnixMillis) -> Vec<(u64, String)> {
    let mut sent = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > until {
            break;
        }
        layer.handle_timeout(at);
        for l in lines(layer) {
            sent.push((at - T0, l));
        }
    }
    sent
}

fn kinds(evs: &[TxEvent]) -> Vec<String> {
    evs.iter()
        .map(|e| match e {
            TxEvent::Request { request, .. } => format!("Request {}", request.method),
            TxEvent::Response { response, .. } => format!("Response {}", response.code),
            TxEvent::Ack { .. } => "Ack".into(),
            TxEvent::StrayResponse { response, .. } => format!("Stray {}", response.code),
            TxEvent::Timeout { timer, .. } => format!("Timeout {timer:?}"),
            TxEvent::TransportError { .. } => "TransportError".into(),
            TxEvent::Terminated { .. } => "Terminated".into(),
        })
        .collect()
}

fn state(layer: &TransactionLayer, key: &TxKey) -> &'static str {
    layer.get(key).map_or("Terminated", |t| t.state_name())
}

fn layer() -> TransactionLayer {
    TransactionLayer::new(TimerConfig::default())
}

// ---------- INVITE client (Figure 5, RFC 6026 Figure 5) ----------

#[test]
fn client_invite_timer_a_doubles_until_timer_b_over_udp() {
    let mut l = layer();
    let inv = request("INVITE", "z9hG4bKa");
    let key = l.send_request(inv, peer(Transport::Udp), T0).unwrap();
    assert_eq!(lines(&mut l), ["INVITE sip:bob@127.0.0.1:5080 SIP/2.0"]);
    let sent = drive(&mut l, T0 + 100_000);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    // Intervals 500, 1000, 2000, 4000, 8000, 16000 ms; Timer B at 64·T1 = 32 s.
    assert_eq!(times, [500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(kinds(&events(&mut l)), ["Timeout B", "Terminated"]);
    assert_eq!(state(&l, &key), "Terminated");
}

#[test]
fn client_invite_over_tcp_has_no_timer_a_but_timer_b() {
    let mut l = layer();
    l.send_request(request("INVITE", "z9hG4bKa"), peer(Transport::Tcp), T0)
        .unwrap();
    lines(&mut l);
    assert_eq!(l.poll_timeout(), Some(T0 + 32_000));
    assert!(drive(&mut l, T0 + 100_000).is_empty());
    assert_eq!(kinds(&events(&mut l)), ["Timeout B", "Terminated"]);
}

#[test]
fn client_invite_proceeding_stops_retransmissions_and_timer_b() {
    let mut l = layer();
    let inv = request("INVITE", "z9hG4bKa");
    let key = l
        .send_request(inv.clone(), peer(Transport::Udp), T0)
        .unwrap();
    lines(&mut l);
    drive(&mut l, T0 + 600); // one retransmission
    l.handle_message(
        SipMessage::Response(reply(&inv, 180)),
        peer(Transport::Udp),
        T0 + 700,
    );
    assert_eq!(state(&l, &key), "Proceeding");
    assert_eq!(l.poll_timeout(), None);
    l.handle_message(
        SipMessage::Response(reply(&inv, 183)),
        peer(Transport::Udp),
        T0 + 800,
    );
    assert_eq!(kinds(&events(&mut l)), ["Response 180", "Response 183"]);
}

#[test]
fn client_invite_non2xx_sends_ack_absorbs_retransmissions_and_waits_timer_d() {
    for (transport, d) in [(Transport::Udp, 32_000), (Transport::Tcp, 0)] {
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKa");
        let key = l.send_request(inv.clone(), peer(transport), T0).unwrap();
        lines(&mut l);
        let busy = reply(&inv, 486);
        l.handle_message(SipMessage::Response(busy.clone()), peer(transport), T0 + 10);
        assert_eq!(lines(&mut l), ["ACK sip:bob@127.0.0.1:5080 SIP/2.0"]);
        assert_eq!(state(&l, &key), "Completed");
        l.handle_message(SipMessage::Response(busy), peer(transport), T0 + 20);
        assert_eq!(lines(&mut l), ["ACK sip:bob@127.0.0.1:5080 SIP/2.0"]);
        assert_eq!(kinds(&events(&mut l)), ["Response 486"]);
        assert_eq!(l.poll_timeout(), Some(T0 + 10 + d));
        drive(&mut l, T0 + 10 + d);
        assert_eq!(kinds(&events(&mut l)), ["Terminated"]);
    }
}

#[test]
fn client_invite_2xx_goes_to_accepted_and_passes_retransmissions_until_timer_m() {
    let mut l = layer();
    let inv = request("INVITE", "z9hG4bKa");
    let key = l
        .send_request(inv.clone(), peer(Transport::Udp), T0)
        .unwrap();
    lines(&mut l);
    let ok = reply(&inv, 200);
    l.handle_message(
        SipMessage::Response(ok.clone()),
        peer(Transport::Udp),
        T0 + 10,
    );
    assert_eq!(state(&l, &key), "Accepted");
    assert!(
        lines(&mut l).is_empty(),
        "no ACK for a 2xx from the transaction"
    );
    l.handle_message(
        SipMessage::Response(ok.clone()),
        peer(Transport::Udp),
        T0 + 500,
    );
    l.handle_message(
        SipMessage::Response(reply(&inv, 486)),
        peer(Transport::Udp),
        T0 + 600,
    );
    assert_eq!(kinds(&events(&mut l)), ["Response 200", "Response 200"]);
    assert_eq!(l.poll_timeout(), Some(T0 + 10 + 32_000));
    drive(&mut l, T0 + 40_000);
    assert_eq!(kinds(&events(&mut l)), ["Terminated"]);
    l.handle_message(SipMessage::Response(ok), peer(Transport::Udp), T0 + 41_000);
    assert_eq!(kinds(&events(&mut l)), ["Stray 200"]);
}

#[test]
fn client_invite_transport_error_in_calling_terminates() {
    let mut l = layer();
    let key = l
        .send_request(request("INVITE", "z9hG4bKa"), peer(Transport::Tcp), T0)
        .unwrap();
    l.handle_transport_error(&key, T0 + 1);
    assert_eq!(kinds(&events(&mut l)), ["TransportError", "Terminated"]);
}

// ---------- non-INVITE client (Figure 6) ----------

#[test]
fn client_non_invite_timer_e_caps_at_t2_until_timer_f() {
    let mut l = layer();
    l.send_request(request("OPTIONS", "z9hG4bKo"), peer(Transport::Udp), T0)
        .unwrap();
    lines(&mut l);
    let times: Vec<u64> = drive(&mut l, T0 + 100_000).iter().map(|s| s.0).collect();
    // Intervals 500, 1000, 2000, 4000, 4000, ... until Timer F at 32 s.
    assert_eq!(
        times,
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(kinds(&events(&mut l)), ["Timeout F", "Terminated"]);
}

#[test]
fn client_non_invite_proceeding_retransmits_every_t2() {
    let mut l = layer();
    let req = request("BYE", "z9hG4bKb");
    let key = l
        .send_request(req.clone(), peer(Transport::Udp), T0)
        .unwrap();
    lines(&mut l);
    drive(&mut l, T0 + 600); // retransmission at 500, next due at 1500
    l.handle_message(
        SipMessage::Response(reply(&req, 180)),
        peer(Transport::Udp),
        T0 + 700,
    );
    assert_eq!(state(&l, &key), "Proceeding");
    let times: Vec<u64> = drive(&mut l, T0 + 15_000).iter().map(|s| s.0).collect();
    // The pending Timer E still fires at 1500, then every T2.
    assert_eq!(times, [1500, 5500, 9500, 13500]);
    l.handle_message(
        SipMessage::Response(reply(&req, 200)),
        peer(Transport::Udp),
        T0 + 15_000,
    );
    assert_eq!(state(&l, &key), "Completed");
    assert_eq!(l.poll_timeout(), Some(T0 + 15_000 + 5_000), "Timer K = T4");
    l.handle_message(
        SipMessage::Response(reply(&req, 200)),
        peer(Transport::Udp),
        T0 + 15_100,
    );
    assert_eq!(kinds(&events(&mut l)), ["Response 180", "Response 200"]);
    drive(&mut l, T0 + 30_000);
    assert_eq!(kinds(&events(&mut l)), ["Terminated"]);
}

#[test]
fn client_non_invite_over_tcp_timer_k_is_zero() {
    let mut l = layer();
    let req = request("REGISTER", "z9hG4bKr");
    l.send_request(req.clone(), peer(Transport::Tcp), T0)
        .unwrap();
    assert_eq!(l.poll_timeout(), Some(T0 + 32_000), "only Timer F");
    l.handle_message(
        SipMessage::Response(reply(&req, 200)),
        peer(Transport::Tcp),
        T0 + 5,
    );
    assert_eq!(l.poll_timeout(), Some(T0 + 5));
    drive(&mut l, T0 + 5);
    assert_eq!(kinds(&events(&mut l)), ["Response 200", "Terminated"]);
    assert!(l.is_empty());
}

#[test]
fn client_non_invite_transport_error_terminates() {
    let mut l = layer();
    let key = l
        .send_request(request("BYE", "z9hG4bKb"), peer(Transport::Udp), T0)
        .unwrap();
    l.handle_transport_error(&key, T0);
    assert_eq!(kinds(&events(&mut l)), ["TransportError", "Terminated"]);
}

#[test]
fn client_requests_need_a_cookie_branch_and_no_ack() {
    let mut l = layer();
    let p = peer(Transport::Udp);
    assert_eq!(
        l.send_request(request("OPTIONS", "1234"), p, T0),
        Err(TxError::BadRequest)
    );
    assert_eq!(
        l.send_request(request("ACK", "z9hG4bKx"), p, T0),
        Err(TxError::AckIsNotATransaction)
    );
    l.send_request(request("OPTIONS", "z9hG4bKx"), p, T0)
        .unwrap();
    assert_eq!(
        l.send_request(request("OPTIONS", "z9hG4bKx"), p, T0),
        Err(TxError::DuplicateTransaction)
    );
}

// ---------- INVITE server (Figure 7, RFC 6026 Figure 7) ----------

fn server_invite(l: &mut TransactionLayer, transport: Transport) -> (TxKey, Request) {
    let inv = request("INVITE", "z9hG4bKs");
    l.handle_message(SipMessage::Request(inv.clone()), peer(transport), T0);
    let evs = events(l);
    let Some(TxEvent::Request { key, .. }) = evs.first() else {
        panic!("{evs:?}")
    };
    (key.clone(), inv)
}

#[test]
fn server_invite_sends_100_after_200ms_when_tu_is_slow() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Udp);
    assert_eq!(l.poll_timeout(), Some(T0 + 200));
    assert_eq!(
        drive(&mut l, T0 + 1000),
        [(200, "SIP/2.0 100 Trying".into())]
    );
    // A retransmitted INVITE gets the 100 again and is not passed to the TU.
    l.handle_message(
        SipMessage::Request(inv.clone()),
        peer(Transport::Udp),
        T0 + 500,
    );
    assert_eq!(lines(&mut l), ["SIP/2.0 100 Trying"]);
    assert!(events(&mut l).is_empty());
    assert_eq!(state(&l, &key), "Proceeding");
}

#[test]
fn server_invite_tu_provisional_suppresses_the_100() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Udp);
    l.send_response(&key, reply(&inv, 180), T0 + 50).unwrap();
    assert_eq!(lines(&mut l), ["SIP/2.0 180 Ringing"]);
    assert_eq!(l.poll_timeout(), None);
    l.handle_message(SipMessage::Request(inv), peer(Transport::Udp), T0 + 500);
    assert_eq!(lines(&mut l), ["SIP/2.0 180 Ringing"]);
}

#[test]
fn server_invite_non2xx_timer_g_until_timer_h_without_ack() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Udp);
    l.send_response(&key, reply(&inv, 486), T0 + 10).unwrap();
    lines(&mut l);
    assert_eq!(state(&l, &key), "Completed");
    let times: Vec<u64> = drive(&mut l, T0 + 100_000).iter().map(|s| s.0).collect();
    // G: 500, 1000, 2000, 4000 (T2 cap), 4000, ... ; H at 64·T1 after Completed.
    assert_eq!(
        times,
        [510, 1510, 3510, 7510, 11510, 15510, 19510, 23510, 27510, 31510]
    );
    assert_eq!(kinds(&events(&mut l)), ["Timeout H", "Terminated"]);
}

#[test]
fn server_invite_ack_confirms_then_timer_i() {
    for (transport, i) in [(Transport::Udp, 5_000), (Transport::Tcp, 0)] {
        let mut l = layer();
        let (key, inv) = server_invite(&mut l, transport);
        let busy = reply(&inv, 486);
        l.send_response(&key, busy.clone(), T0 + 10).unwrap();
        lines(&mut l);
        l.handle_message(SipMessage::Request(inv.clone()), peer(transport), T0 + 20);
        assert_eq!(
            lines(&mut l),
            ["SIP/2.0 486 Busy Here"],
            "INVITE retransmission"
        );
        let ack = crate::message::ack_for_non2xx(&inv, &busy);
        l.handle_message(SipMessage::Request(ack.clone()), peer(transport), T0 + 30);
        assert_eq!(state(&l, &key), "Confirmed");
        assert_eq!(l.poll_timeout(), Some(T0 + 30 + i));
        if i > 0 {
            l.handle_message(SipMessage::Request(ack), peer(transport), T0 + 40);
            assert!(lines(&mut l).is_empty() && events(&mut l).is_empty());
        }
        assert!(drive(&mut l, T0 + 30 + i).is_empty());
        assert_eq!(kinds(&events(&mut l)), ["Terminated"]);
        assert_eq!(
            l.send_response(&key, busy, T0 + 100_000),
            Err(TxError::UnknownTransaction)
        );
    }
}

#[test]
fn server_invite_over_tcp_has_no_timer_g() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Tcp);
    l.send_response(&key, reply(&inv, 603), T0 + 10).unwrap();
    lines(&mut l);
    assert_eq!(l.poll_timeout(), Some(T0 + 10 + 32_000), "only Timer H");
}

#[test]
fn server_invite_2xx_accepted_absorbs_invites_passes_acks_until_timer_l() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Udp);
    let ok = reply(&inv, 200);
    l.send_response(&key, ok.clone(), T0 + 10).unwrap();
    assert_eq!(state(&l, &key), "Accepted");
    assert_eq!(lines(&mut l), ["SIP/2.0 200 OK"]);
    l.handle_message(
        SipMessage::Request(inv.clone()),
        peer(Transport::Udp),
        T0 + 20,
    );
    assert!(
        lines(&mut l).is_empty(),
        "the TU, not the transaction, resends 2xx"
    );
    l.send_response(&key, ok.clone(), T0 + 510).unwrap();
    assert_eq!(lines(&mut l), ["SIP/2.0 200 OK"]);
    assert_eq!(
        l.send_response(&key, reply(&inv, 486), T0 + 600),
        Err(TxError::InvalidState)
    );
    // An ACK with the INVITE's branch reaches the TU.
    let mut ack = crate::message::ack_for_non2xx(&inv, &ok);
    ack.headers.set("CSeq", "1 ACK");
    l.handle_message(SipMessage::Request(ack), peer(Transport::Udp), T0 + 700);
    assert_eq!(kinds(&events(&mut l)), ["Ack"]);
    assert_eq!(l.poll_timeout(), Some(T0 + 10 + 32_000));
    drive(&mut l, T0 + 40_000);
    assert_eq!(kinds(&events(&mut l)), ["Terminated"]);
}

#[test]
fn ack_for_2xx_with_its_own_branch_goes_to_the_tu() {
    let mut l = layer();
    l.handle_message(
        SipMessage::Request(request("ACK", "z9hG4bKother")),
        peer(Transport::Udp),
        T0,
    );
    assert_eq!(kinds(&events(&mut l)), ["Ack"]);
    assert!(l.is_empty());
}

#[test]
fn server_invite_transport_error() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Tcp);
    l.send_response(&key, reply(&inv, 500), T0 + 1).unwrap();
    l.handle_transport_error(&key, T0 + 2);
    assert_eq!(kinds(&events(&mut l)), ["TransportError", "Terminated"]);
}

#[test]
fn cancel_matches_its_invite() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Udp);
    let cancel = crate::message::cancel_for(&inv);
    l.handle_message(SipMessage::Request(cancel), peer(Transport::Udp), T0 + 5);
    let evs = events(&mut l);
    let Some(TxEvent::Request { key: ckey, .. }) = evs.first() else {
        panic!()
    };
    assert_ne!(ckey, &key, "CANCEL is a transaction of its own");
    assert_eq!(l.invite_for_cancel(ckey), Some(key));
}

// ---------- non-INVITE server (Figure 8) ----------

#[test]
fn server_non_invite_trying_proceeding_completed_timer_j() {
    for (transport, j) in [(Transport::Udp, 32_000), (Transport::Tcp, 0)] {
        let mut l = layer();
        let req = request("OPTIONS", "z9hG4bKn");
        l.handle_message(SipMessage::Request(req.clone()), peer(transport), T0);
        let key = TxKey::for_request(&req).unwrap();
        assert_eq!(kinds(&events(&mut l)), ["Request OPTIONS"]);
        // Trying: retransmissions are absorbed, no 100 (RFC 4320).
        l.handle_message(SipMessage::Request(req.clone()), peer(transport), T0 + 1);
        assert!(lines(&mut l).is_empty() && events(&mut l).is_empty());
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(
            l.send_response(&key, reply(&req, 100), T0 + 2),
            Err(TxError::ForbiddenResponse)
        );
        assert_eq!(
            l.send_response(&key, reply(&req, 408), T0 + 2),
            Err(TxError::ForbiddenResponse)
        );
        l.send_response(&key, reply(&req, 183), T0 + 3).unwrap();
        assert_eq!(state(&l, &key), "Proceeding");
        l.handle_message(SipMessage::Request(req.clone()), peer(transport), T0 + 4);
        assert_eq!(lines(&mut l), ["SIP/2.0 183 Session Progress"; 2]);
        l.send_response(&key, reply(&req, 200), T0 + 5).unwrap();
        assert_eq!(state(&l, &key), "Completed");
        l.handle_message(SipMessage::Request(req.clone()), peer(transport), T0 + 6);
        assert_eq!(lines(&mut l), ["SIP/2.0 200 OK"; 2]);
        assert_eq!(
            l.send_response(&key, reply(&req, 500), T0 + 7),
            Err(TxError::InvalidState)
        );
        assert_eq!(l.poll_timeout(), Some(T0 + 5 + j));
        drive(&mut l, T0 + 5 + j);
        assert_eq!(kinds(&events(&mut l)), ["Terminated"]);
    }
}

#[test]
fn rfc2543_requests_without_cookie_match_by_fields() {
    let mut l = layer();
    let req = request("OPTIONS", "old1");
    l.handle_message(SipMessage::Request(req.clone()), peer(Transport::Udp), T0);
    l.handle_message(
        SipMessage::Request(req.clone()),
        peer(Transport::Udp),
        T0 + 1,
    );
    assert_eq!(kinds(&events(&mut l)), ["Request OPTIONS"]);
    let mut other = req;
    other.headers.set("CSeq", "2 OPTIONS");
    l.handle_message(SipMessage::Request(other), peer(Transport::Udp), T0 + 2);
    assert_eq!(kinds(&events(&mut l)), ["Request OPTIONS"]);
    assert_eq!(l.len(), 2);
}

#[test]
fn withdrawn_2xx_reopens_the_server_invite_for_a_final_error() {
    let mut l = layer();
    let (key, inv) = server_invite(&mut l, Transport::Udp);
    l.send_response(&key, reply(&inv, 200), T0 + 10).unwrap();
    assert_eq!(lines(&mut l), ["SIP/2.0 200 OK"]);
    // The 200 never left (its store write failed): back to Proceeding, where a final
    // error response is allowed and retransmitted as Timer G says.
    assert!(l.withdraw_2xx(&key, T0 + 20).is_some_and(|r| r.code == 200));
    assert_eq!(state(&l, &key), "Proceeding");
    l.send_response(&key, reply(&inv, 500), T0 + 30).unwrap();
    assert_eq!(state(&l, &key), "Completed");
    assert_eq!(lines(&mut l), ["SIP/2.0 500 Server Internal Error"]);
    assert!(
        l.withdraw_2xx(&key, T0 + 40).is_none(),
        "only from Accepted"
    );
}

/// RFC 3581 and §18.2.1: what the response's Via says about where the request came from.
#[test]
fn responses_carry_received_and_rport_from_the_source_address() {
    let from = Peer {
        transport: Transport::Udp,
        addr: "192.0.2.7:40123".parse().unwrap(),
    };
    let via_of_answer = |via: &str| {
        let mut layer = TransactionLayer::new(TimerConfig::default());
        let mut req = request("OPTIONS", "z9hG4bKs1");
        req.headers.set("Via", via);
        layer.handle_message(SipMessage::Request(req), from, T0);
        let Some(TxEvent::Request { key, request, .. }) = layer.poll_event() else {
            panic!("no request event")
        };
        layer.send_response(&key, reply(&request, 200), T0).unwrap();
        let t = layer.poll_transmit().unwrap();
        assert_eq!(t.to, from, "the response goes back to the source");
        let text = String::from_utf8(t.bytes).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("Via: "))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        via_of_answer("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKs1;rport"),
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKs1;rport=40123;received=192.0.2.7"
    );
    assert_eq!(
        via_of_answer("SIP/2.0/UDP phone.example.com;branch=z9hG4bKs1"),
        "SIP/2.0/UDP phone.example.com;branch=z9hG4bKs1;received=192.0.2.7"
    );
    assert_eq!(
        via_of_answer("SIP/2.0/UDP 192.0.2.7:40123;branch=z9hG4bKs1"),
        "SIP/2.0/UDP 192.0.2.7:40123;branch=z9hG4bKs1",
        "nothing to say when the sent-by is the source"
    );
}
