//! Every state × event of the four machines, as tables: each row a machine in a state,
//! an event, and what it must do.

use super::*;

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A response from the network (client) or from the TU (server).
    Resp(u16),
    /// The request again (server) .
    Retransmit,
    Ack,
    /// The earliest timer fires.
    Time,
    TransportError,
}

fn fire_next(l: &mut TransactionLayer) {
    if let Some(t) = l.poll_timeout() {
        l.handle_timeout(t);
    }
}

fn client_in(target: &str, method: &str) -> (TransactionLayer, TxKey, Request) {
    let mut l = layer();
    let req = request(method, "z9hG4bKt");
    let key = l
        .send_request(req.clone(), peer(Transport::Udp), T0)
        .unwrap();
    let step = match target {
        "Proceeding" => Some(180),
        "Completed" => Some(if method == "INVITE" { 486 } else { 200 }),
        "Accepted" => Some(200),
        _ => None,
    };
    if let Some(code) = step {
        l.handle_message(
            SipMessage::Response(reply(&req, code)),
            peer(Transport::Udp),
            T0,
        );
    }
    assert_eq!(state(&l, &key), target, "setup");
    (l, key, req)
}

fn server_in(target: &str, method: &str) -> (TransactionLayer, TxKey, Request) {
    let mut l = layer();
    let req = request(method, "z9hG4bKt");
    l.handle_message(SipMessage::Request(req.clone()), peer(Transport::Udp), T0);
    let key = TxKey::for_request(&req).unwrap();
    match target {
        "Proceeding" => l.send_response(&key, reply(&req, 180), T0).unwrap(),
        "Completed" => l.send_response(&key, reply(&req, 486), T0).unwrap(),
        "Confirmed" => {
            l.send_response(&key, reply(&req, 486), T0).unwrap();
            let mut ack = req.clone();
            ack.method = Method::Ack;
            ack.headers.set("CSeq", "1 ACK");
            l.handle_message(SipMessage::Request(ack), peer(Transport::Udp), T0);
        }
        "Accepted" => l.send_response(&key, reply(&req, 200), T0).unwrap(),
        _ => {}
    }
    assert_eq!(state(&l, &key), target, "setup");
    (l, key, req)
}

fn apply(l: &mut TransactionLayer, key: &TxKey, req: &Request, ev: Ev, server: bool) {
    match ev {
        Ev::Resp(code) if server => {
            let _ = l.send_response(key, reply(req, code), T0 + 1);
        }
        Ev::Resp(code) => l.handle_message(
            SipMessage::Response(reply(req, code)),
            peer(Transport::Udp),
            T0 + 1,
        ),
        Ev::Retransmit => l.handle_message(
            SipMessage::Request(req.clone()),
            peer(Transport::Udp),
            T0 + 1,
        ),
        Ev::Ack => {
            let mut ack = req.clone();
            ack.method = Method::Ack;
            ack.headers.set("CSeq", "1 ACK");
            l.handle_message(SipMessage::Request(ack), peer(Transport::Udp), T0 + 1);
        }
        Ev::Time => fire_next(l),
        Ev::TransportError => l.handle_transport_error(key, T0 + 1),
    }
}

#[test]
fn every_state_and_event_of_the_four_machines() {
    use Ev::*;
    // (machine, state, event, expected state), RFC 3261 Figures 5–8 with RFC 6026.
    let table: &[(&str, &str, Ev, &str)] = &[
        ("ci", "Calling", Resp(180), "Proceeding"),
        ("ci", "Calling", Resp(200), "Accepted"),
        ("ci", "Calling", Resp(486), "Completed"),
        ("ci", "Calling", Time, "Calling"), // Timer A
        ("ci", "Calling", TransportError, "Terminated"),
        ("ci", "Proceeding", Resp(183), "Proceeding"),
        ("ci", "Proceeding", Resp(200), "Accepted"),
        ("ci", "Proceeding", Resp(603), "Completed"),
        ("ci", "Proceeding", Time, "Proceeding"), // no timer: Timer C is the TU's
        ("ci", "Completed", Resp(180), "Completed"),
        ("ci", "Completed", Resp(200), "Completed"),
        ("ci", "Completed", Resp(486), "Completed"),
        ("ci", "Completed", Time, "Terminated"), // Timer D
        ("ci", "Completed", TransportError, "Terminated"),
        ("ci", "Accepted", Resp(180), "Accepted"),
        ("ci", "Accepted", Resp(200), "Accepted"),
        ("ci", "Accepted", Resp(486), "Accepted"),
        ("ci", "Accepted", Time, "Terminated"), // Timer M
        ("ci", "Accepted", TransportError, "Accepted"),
        ("cn", "Trying", Resp(180), "Proceeding"),
        ("cn", "Trying", Resp(200), "Completed"),
        ("cn", "Trying", Resp(404), "Completed"),
        ("cn", "Trying", Time, "Trying"), // Timer E
        ("cn", "Trying", TransportError, "Terminated"),
        ("cn", "Proceeding", Resp(180), "Proceeding"),
        ("cn", "Proceeding", Resp(500), "Completed"),
        ("cn", "Proceeding", Time, "Proceeding"), // Timer E
        ("cn", "Proceeding", TransportError, "Terminated"),
        ("cn", "Completed", Resp(180), "Completed"),
        ("cn", "Completed", Resp(200), "Completed"),
        ("cn", "Completed", Time, "Terminated"), // Timer K
        ("cn", "Completed", TransportError, "Completed"),
        ("si", "Proceeding", Resp(183), "Proceeding"),
        ("si", "Proceeding", Resp(200), "Accepted"),
        ("si", "Proceeding", Resp(486), "Completed"),
        ("si", "Proceeding", Retransmit, "Proceeding"),
        ("si", "Proceeding", Ack, "Proceeding"),
        ("si", "Proceeding", TransportError, "Terminated"),
        ("si", "Completed", Resp(180), "Completed"),
        ("si", "Completed", Resp(200), "Completed"),
        ("si", "Completed", Retransmit, "Completed"),
        ("si", "Completed", Ack, "Confirmed"),
        ("si", "Completed", Time, "Completed"), // Timer G
        ("si", "Completed", TransportError, "Terminated"),
        ("si", "Confirmed", Resp(200), "Confirmed"),
        ("si", "Confirmed", Retransmit, "Confirmed"),
        ("si", "Confirmed", Ack, "Confirmed"),
        ("si", "Confirmed", Time, "Terminated"), // Timer I
        ("si", "Accepted", Resp(180), "Accepted"),
        ("si", "Accepted", Resp(200), "Accepted"),
        ("si", "Accepted", Resp(486), "Accepted"),
        ("si", "Accepted", Retransmit, "Accepted"),
        ("si", "Accepted", Ack, "Accepted"),
        ("si", "Accepted", Time, "Terminated"), // Timer L
        ("si", "Accepted", TransportError, "Accepted"),
        ("sn", "Trying", Resp(180), "Proceeding"),
        ("sn", "Trying", Resp(200), "Completed"),
        ("sn", "Trying", Resp(404), "Completed"),
        ("sn", "Trying", Retransmit, "Trying"),
        ("sn", "Trying", Time, "Trying"), // no timer: the TU answers
        ("sn", "Trying", TransportError, "Terminated"),
        ("sn", "Proceeding", Resp(180), "Proceeding"),
        ("sn", "Proceeding", Resp(200), "Completed"),
        ("sn", "Proceeding", Retransmit, "Proceeding"),
        ("sn", "Proceeding", TransportError, "Terminated"),
        ("sn", "Completed", Resp(200), "Completed"),
        ("sn", "Completed", Retransmit, "Completed"),
        ("sn", "Completed", Time, "Terminated"), // Timer J
        ("sn", "Completed", TransportError, "Terminated"),
    ];
    for (machine, from, ev, to) in table {
        let (server, method) = match *machine {
            "ci" => (false, "INVITE"),
            "cn" => (false, "OPTIONS"),
            "si" => (true, "INVITE"),
            _ => (true, "OPTIONS"),
        };
        let (mut l, key, req) = if server {
            server_in(from, method)
        } else {
            client_in(from, method)
        };
        apply(&mut l, &key, &req, *ev, server);
        assert_eq!(state(&l, &key), *to, "{machine} {from} + {ev:?}");
    }
}
