use super::*;
use crate::cluster::{hrw, token, MemberState};
use crate::lb::HealthConfig;

const PHONE: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn balancer(affinity: Affinity) -> Balancer {
    let mut pool = Pool::new(HealthConfig::default(), true);
    for id in 1..=3 {
        pool.upsert(id, addr(5060 + id), 1, MemberState::Active, 0, 0);
    }
    Balancer::new(addr(5060), pool, affinity, Limits::default())
}

fn request(method: &str, uri: &str, call_id: &str, branch: &str, to_tag: &str) -> Vec<u8> {
    let tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>{tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:alice@10.0.0.9:5070>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn parse(bytes: &[u8]) -> SipMessage {
    crate::message::parse_and_validate(bytes, &Limits::default())
        .expect("the balancer's output parses")
}

fn node_of(b: &Balancer, out: &Out) -> u16 {
    b.pool
        .nodes()
        .find(|n| n.addr == out.to)
        .map(|n| n.id)
        .unwrap_or(0)
}

#[test]
fn a_new_call_goes_by_its_call_id_and_its_answers_come_back() {
    let mut b = balancer(Affinity::default());
    let from = SocketAddr::from(PHONE);
    let inv = request("INVITE", "sip:bob@example.com", "c1@x", "z9hG4bKp1", "");
    let out = b.handle_datagram(&inv, from, 1).expect("forwarded");
    let expected = b.pool.for_new("c1@x", 1);
    assert_eq!(Some(node_of(&b, &out)), expected);
    let SipMessage::Request(fwd) = parse(&out.bytes) else {
        panic!("a request")
    };
    let vias: Vec<&str> = fwd.headers.get_all("Via").collect();
    assert!(vias[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKlb"));
    assert!(
        vias[1].ends_with(";received=127.0.0.1;rport=40000"),
        "{}",
        vias[1]
    );
    assert_eq!(fwd.headers.get("Max-Forwards"), Some("69"));
    // The node answers through our Via; it goes to the phone's source, our Via removed.
    let resp = response_to(&fwd, 180, None, "b1").to_bytes();
    let back = b.handle_datagram(&resp, out.to, 2);
    let back = back.unwrap_or_else(|| panic!("{:?} {}", b.metrics, String::from_utf8_lossy(&resp)));
    assert_eq!(back.to, from);
    let SipMessage::Response(r) = parse(&back.bytes) else {
        panic!("a response")
    };
    assert_eq!(r.headers.count("Via"), 1);
    // A retransmission gets the same branch (the node matches it to its transaction).
    let again = b.handle_datagram(&inv, from, 3).expect("forwarded");
    assert_eq!(again.bytes, out.bytes);
}

#[test]
fn a_dialog_follows_its_token_to_the_node_then_to_the_adopter() {
    let mut b = balancer(Affinity::default());
    let from = SocketAddr::from(PHONE);
    let call = "2.abcdefgh";
    let uri = format!("sip:{}@127.0.0.1:5060", token::contact_user(2, 1, call));
    let bye = request("BYE", &uri, "c1@x", "z9hG4bKp2", "t");
    let out = b.handle_datagram(&bye, from, 1).expect("forwarded");
    assert_eq!(node_of(&b, &out), 2);
    b.pool.remove(2);
    let out = b.handle_datagram(&bye, from, 2).expect("forwarded");
    assert_eq!(
        Some(node_of(&b, &out)),
        hrw::choose(call, &[(1, 1), (3, 1)])
    );
    // A response to node 3's own request goes to node 3.
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK3.xyz\r\n\
                From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: 3.q\r\nCSeq: 2 BYE\r\n\
                Content-Length: 0\r\n\r\n";
    let out = b
        .handle_datagram(resp.as_bytes(), from, 3)
        .expect("to node 3");
    assert_eq!(out.to, addr(5063));
    assert_eq!(out.bytes, resp.as_bytes());
}

#[test]
fn a_cancel_and_a_retransmitted_invite_reach_its_node_though_slow_start_moved_the_choice() {
    let mut b = balancer(Affinity::default());
    let from = SocketAddr::from(PHONE);
    // Find a Call-ID whose choice moves when node 1 restarts and ramps up.
    let t0 = 1_000_000;
    let mut moved = None;
    for i in 0..500 {
        let id = format!("c{i}@x");
        let mut later = b.clone();
        later
            .pool
            .upsert(1, addr(5061), 2, MemberState::Active, t0, 0);
        let (before, after) = (
            later.pool.for_new(&id, t0 + 1),
            later.pool.for_new(&id, t0 + 9_000),
        );
        if before != after {
            moved = Some(id);
            b = later;
            break;
        }
    }
    let id = moved.expect("some Call-ID moves");
    let inv = request("INVITE", "sip:bob@example.com", &id, "z9hG4bKp9", "");
    let first = b.handle_datagram(&inv, from, t0 + 1).expect("forwarded");
    let cancel = request("CANCEL", "sip:bob@example.com", &id, "z9hG4bKp9", "");
    let out = b
        .handle_datagram(&cancel, from, t0 + 9_000)
        .expect("forwarded");
    assert_eq!(out.to, first.to);
    let branch = |bytes: &[u8]| {
        let m = parse(bytes);
        m.headers().get("Via").map(str::to_string)
    };
    assert_eq!(
        branch(&out.bytes),
        branch(&first.bytes),
        "the INVITE's branch"
    );
    // A retransmission of the INVITE goes there too: one call, not two.
    let again = b
        .handle_datagram(&inv, from, t0 + 9_000)
        .expect("forwarded");
    assert_eq!(again.to, first.to, "the INVITE's retransmission");
}

#[test]
fn with_no_node_a_request_gets_503_and_an_ack_nothing() {
    let mut b = Balancer::new(
        addr(5060),
        Pool::new(HealthConfig::default(), true),
        Affinity::default(),
        Limits::default(),
    );
    let from = SocketAddr::from(PHONE);
    let out = b
        .handle_datagram(&request("INVITE", "sip:b@x", "c", "z9hG4bK1", ""), from, 1)
        .expect("answered");
    let SipMessage::Response(r) = parse(&out.bytes) else {
        panic!("a response")
    };
    assert_eq!((r.code, r.headers.get("Retry-After")), (503, Some("5")));
    assert_eq!(out.to, from);
    assert_eq!(
        b.handle_datagram(&request("ACK", "sip:b@x", "c", "z9hG4bK1", "t"), from, 1),
        None
    );
    // Unparsable: a request that can be answered gets 400; noise is dropped.
    let bad = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\n\r\n";
    let out = b.handle_datagram(bad, from, 1);
    assert!(out.is_some_and(|o| o.bytes.starts_with(b"SIP/2.0 400")));
    assert_eq!(b.handle_datagram(b"\x00\xff garbage", from, 1), None);
}

#[test]
fn source_affinity_keeps_one_phones_registrations_on_one_node() {
    let affinity = Affinity {
        methods: vec!["REGISTER".into()],
        prefixes: vec!["10.1.0.0/16".into()],
    };
    let mut b = balancer(affinity);
    let from = SocketAddr::from(PHONE);
    let nodes: std::collections::BTreeSet<u16> = (0..50)
        .map(|i| {
            let reg = request(
                "REGISTER",
                "sip:example.com",
                &format!("r{i}"),
                "z9hG4bK1",
                "",
            );
            let out = b.handle_datagram(&reg, from, 1).expect("forwarded");
            node_of(&b, &out)
        })
        .collect();
    assert_eq!(nodes.len(), 1);
    assert!(in_prefix("10.1.0.0/16", "10.1.200.3".parse().unwrap()));
    assert!(!in_prefix("10.1.0.0/16", "10.2.0.3".parse().unwrap()));
    assert!(in_prefix("::1", "::1".parse().unwrap()));
    assert!(!in_prefix("bogus/99", "::1".parse().unwrap()));
}

/// A member's request with its Via naming the balancer (members advertise it) goes on to
/// its Request-URI even from an address the pool does not list (a member just restarted):
/// routed as a phone's, it came back to the member that sent it, which looked its call up
/// again and again (lb-node-crash-under-load seed 69).
#[test]
fn a_members_request_from_an_unlisted_address_goes_to_its_request_uri() {
    let mut b = balancer(Affinity::default());
    let bye = String::from_utf8(request(
        "BYE",
        "sip:bob@10.0.0.7:5090",
        "1.abc",
        "z9hG4bK1.abc",
        "bt",
    ))
    .unwrap()
    .replace(
        "Via: SIP/2.0/UDP 10.0.0.9:5070",
        "Via: SIP/2.0/UDP 127.0.0.1:5060",
    );
    let unlisted = addr(5069);
    let out = b
        .handle_datagram(bye.as_bytes(), unlisted, 1)
        .expect("relayed");
    assert_eq!(out.to, SocketAddr::from(([10, 0, 0, 7], 5090)));
    let SipMessage::Request(fwd) = parse(&out.bytes) else {
        panic!("a request")
    };
    assert_eq!(fwd.headers.count("Via"), 1, "nothing added");
}

/// A phone on a connection the balancer holds (TCP, TLS, WebSocket): its INVITE records a
/// route through the balancer naming the connection; the node's answer comes back to the
/// connection's address; the node's BYE to the phone, routed through the balancer by that
/// route, leaves on the connection with the route removed. A phone's request routed
/// through the balancer has its route removed too.
#[test]
fn a_phone_on_a_connection_is_reached_back_on_it() {
    let mut b = balancer(Affinity::default());
    let phone = SocketAddr::from(PHONE);
    let inv = request("INVITE", "sip:bob@example.com", "f1@x", "z9hG4bKf1", "");
    let out = b
        .handle(&inv, Source::connection(phone, None), 1)
        .expect("forwarded");
    let SipMessage::Request(fwd) = parse(&out.bytes) else {
        panic!("a request")
    };
    let rr = fwd.headers.get("Record-Route").expect("a Record-Route");
    assert_eq!(rr, crate::lb::flow::flow_route(addr(5060), phone));
    let resp = response_to(&fwd, 200, None, "b1");
    let back = b
        .handle_datagram(&resp.to_bytes(), out.to, 2)
        .expect("back");
    assert_eq!(back.to, phone);
    // The node's BYE on the dialog: its route set is the Record-Route.
    let bye = format!(
        "BYE sip:alice@x.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn1\r\n\
         Route: {rr}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\n\
         To: <sip:alice@example.com>;tag=a1\r\nCall-ID: f1@x\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let to_phone = b
        .handle_datagram(bye.as_bytes(), out.to, 3)
        .expect("relayed");
    assert_eq!(to_phone.to, phone);
    let SipMessage::Request(sent) = parse(&to_phone.bytes) else {
        panic!("a request")
    };
    assert_eq!(sent.headers.get("Route"), None);
    // The phone's own BYE, routed by the Record-Route it got: the route is ours, removed.
    let own = String::from_utf8(request(
        "BYE",
        "sip:x@127.0.0.1:5061",
        "f1@x",
        "z9hG4bKf2",
        "b1",
    ))
    .unwrap()
    .replace("Max-Forwards", &format!("Route: {rr}\r\nMax-Forwards"));
    let out = b
        .handle(own.as_bytes(), Source::connection(phone, None), 4)
        .expect("forwarded");
    let SipMessage::Request(fwd) = parse(&out.bytes) else {
        panic!("a request")
    };
    assert_eq!(fwd.headers.get("Route"), None);
    assert_eq!(
        fwd.headers.get("Record-Route"),
        None,
        "in a dialog: none added"
    );
    // Over UDP nothing is added.
    let inv = request("INVITE", "sip:bob@example.com", "u1@x", "z9hG4bKu1", "");
    let out = b.handle_datagram(&inv, phone, 5).expect("forwarded");
    let SipMessage::Request(fwd) = parse(&out.bytes) else {
        panic!("a request")
    };
    assert_eq!(fwd.headers.get("Record-Route"), None);
}

/// A REGISTER on a connection records the path to it; a node's INVITE to the phone,
/// routed by that path, leaves on the connection and records the route back too (so the
/// node's ACK and BYE come the same way).
#[test]
fn a_registration_on_a_connection_is_called_on_it() {
    let mut b = balancer(Affinity::default());
    let phone = SocketAddr::from(PHONE);
    let reg = request("REGISTER", "sip:example.com", "r1@x", "z9hG4bKr1", "");
    let out = b
        .handle(&reg, Source::connection(phone, None), 1)
        .expect("forwarded");
    let SipMessage::Request(fwd) = parse(&out.bytes) else {
        panic!("a request")
    };
    let path = fwd.headers.get("Path").expect("a Path").to_string();
    assert_eq!(fwd.headers.get("Record-Route"), None);
    let inv = format!(
        "INVITE sip:alice@x.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn2\r\n\
         Route: {path}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\n\
         To: <sip:alice@example.com>\r\nCall-ID: n2@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let to_phone = b
        .handle_datagram(inv.as_bytes(), out.to, 2)
        .expect("relayed");
    assert_eq!(to_phone.to, phone);
    let SipMessage::Request(sent) = parse(&to_phone.bytes) else {
        panic!("a request")
    };
    assert_eq!(sent.headers.get("Route"), None);
    assert_eq!(sent.headers.get("Record-Route"), Some(path.as_str()));
}

/// A WebSocket client's cookie pins its new requests to the node it names while that node
/// lives; then they go by the Call-ID again.
#[test]
fn a_cookie_pins_new_requests_to_its_node_while_it_lives() {
    let mut b = balancer(Affinity::default());
    let phone = SocketAddr::from(PHONE);
    for i in 0..20 {
        let reg = request(
            "REGISTER",
            "sip:example.com",
            &format!("p{i}@x"),
            "z9hG4bKp",
            "",
        );
        let out = b
            .handle(&reg, Source::connection(phone, Some(2)), 1)
            .expect("forwarded");
        assert_eq!(node_of(&b, &out), 2);
    }
    b.pool.remove(2);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let reg = request(
            "REGISTER",
            "sip:example.com",
            &format!("q{i}@x"),
            "z9hG4bKq",
            "",
        );
        let out = b
            .handle(&reg, Source::connection(phone, Some(2)), 2)
            .expect("forwarded");
        seen.insert(node_of(&b, &out));
    }
    assert_eq!(seen, [1, 3].into_iter().collect());
}
