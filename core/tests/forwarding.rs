//! A request for a call whose owner lives: forwarded to the owner, its answer relayed
//! back; served here should the owner leave before answering (see `takeover` for the
//! rest of "any member serves any call").

mod common;
use common::cluster::*;
use common::*;

/// Node 2 of members 1 and 2 (node 1 at 5060), told where each member is.
fn member_2_knowing_addresses(now: u64) -> Node {
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    know_members_1_and_2(&mut n2, now);
    n2
}

/// A request for a call whose owner lives is forwarded to the owner (our Via on top,
/// Max-Forwards one less), forwarded again when retransmitted, and answered with the
/// owner's answer, through the request's own transaction here.
#[test]
fn a_request_for_a_live_owners_call_is_forwarded_to_it_and_its_answer_comes_back() {
    let (mut store, call_key, _b, ok) = call_on_node_1();
    let mut n2 = member_2_knowing_addresses(T0 + 1_000);
    let info = from_a(&ok, "INFO", 2, "z9hG4bKfwd");
    send(&mut n2, T0 + 5_000, A, &info);
    load_all(&mut n2, &store, T0 + 5_010);
    let out = run(&mut n2, &mut store);
    assert_eq!(
        lines(&out),
        ["127.0.0.1:5060 INFO sip:drongo@127.0.0.1:5060"]
    );
    let (_, SipMessage::Request(fwd)) = &out[0] else {
        panic!()
    };
    let vias: Vec<&str> = fwd.headers.get_all("Via").collect();
    assert!(
        vias[0].starts_with("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKdrfw"),
        "{vias:?}"
    );
    assert_eq!(vias.len(), 2, "{vias:?}");
    assert_eq!(fwd.headers.get("Max-Forwards"), Some("69"));
    assert_eq!(owner(&store, &call_key), serde_json::json!([1, 1]));
    // The copy was lost: the phone's retransmission is forwarded again, not answered.
    send(&mut n2, T0 + 5_500, A, &info);
    let again = run(&mut n2, &mut store);
    assert_eq!(lines(&again), lines(&out), "forwarded again");
    // The owner's 200 (every Via copied) goes to the caller without our Via.
    let resp = reply(fwd, "200 OK").replace(
        &format!("Via: {}\n", vias[0]),
        &format!("Via: {}\nVia: {}\n", vias[0], vias[1]),
    );
    send(&mut n2, T0 + 5_520, "127.0.0.1:5060", &resp);
    let back = run(&mut n2, &mut store);
    assert_eq!(lines(&back), ["127.0.0.1:5061 200 OK"]);
    let (_, SipMessage::Response(r)) = &back[0] else {
        panic!()
    };
    assert_eq!(r.headers.get_all("Via").collect::<Vec<_>>(), [vias[1]]);
    assert_eq!(n2.metrics().forwarded, 2);
    assert_eq!(n2.metrics().forwarded_responses, 1);
    // Answered: held no more, and a retransmission gets the 200 again from here.
    assert_eq!(n2.poll_timeout().filter(|t| *t < T0 + 30_000), None);
    send(&mut n2, T0 + 6_000, A, &info);
    assert_eq!(lines(&run(&mut n2, &mut store)), ["127.0.0.1:5061 200 OK"]);
    assert_eq!(n2.metrics().takeovers, 0);
    assert_eq!(owner(&store, &call_key), serde_json::json!([1, 1]));
}

/// The owner dies before it answers a forwarded request: the node takes the call over and
/// serves the request itself; the phone gets one final response.
#[test]
fn a_forwarded_request_is_served_here_when_the_owner_leaves_before_answering() {
    let (mut store, call_key, _b, ok) = call_on_node_1();
    let mut n2 = member_2_knowing_addresses(T0 + 1_000);
    send(&mut n2, T0 + 5_000, A, &from_a(&ok, "BYE", 2, "z9hG4bKfb"));
    load_all(&mut n2, &store, T0 + 5_010);
    let out = run(&mut n2, &mut store);
    assert_eq!(
        lines(&out),
        ["127.0.0.1:5060 BYE sip:drongo@127.0.0.1:5060"]
    );
    n2.handle_members(T0 + 5_300, 1, &[(2, 1)], &[]);
    load_all(&mut n2, &store, T0 + 5_310);
    let l = lines(&run(&mut n2, &mut store));
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5062 BYE")),
        "the callee gets its BYE from node 2: {l:?}"
    );
    assert_eq!(owner(&store, &call_key)[0], 2);
    assert_eq!(n2.metrics().takeovers, 1);
}

/// A request that a member forwarded already is not forwarded again (members whose views
/// differ must not bounce it between them).
#[test]
fn a_forwarded_request_is_held_not_forwarded_again() {
    let (mut store, _k, _b, ok) = call_on_node_1();
    let info = from_a(&ok, "INFO", 3, "z9hG4bKf2").replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKdrfw0123\nVia: ",
        1,
    );
    let mut n2 = member_2_knowing_addresses(T0 + 1_000);
    send(&mut n2, T0 + 5_000, "127.0.0.1:5080", &info);
    load_all(&mut n2, &store, T0 + 5_010);
    assert!(lines(&run(&mut n2, &mut store)).is_empty());
    assert_eq!(n2.metrics().forwarded, 0);
}

/// A re-INVITE for a live owner's call is forwarded: the owner's 2xx and its
/// retransmissions reach the phone through the forwarding member, whose phone's ACK goes
/// on to the owner; a non-2xx gets the hop's ACK from the member.
#[test]
fn a_forwarded_reinvite_gets_its_2xx_and_its_ack_reaches_the_owner() {
    let (mut store, _k, _b, ok) = call_on_node_1();
    let mut n2 = member_2_knowing_addresses(T0 + 1_000);
    let reinvite = reinvite_from_a(&ok);
    send(&mut n2, T0 + 5_000, A, &reinvite);
    load_all(&mut n2, &store, T0 + 5_010);
    let out = run(&mut n2, &mut store);
    let l = lines(&out);
    assert!(
        l.contains(&"127.0.0.1:5060 INVITE sip:drongo@127.0.0.1:5060".to_string()),
        "{l:?}"
    );
    let Some((_, SipMessage::Request(fwd))) = out.iter().find(|(to, _)| to == "127.0.0.1:5060")
    else {
        panic!("{l:?}")
    };
    let vias: Vec<&str> = fwd.headers.get_all("Via").collect();
    let both = |status: &str| {
        reply(fwd, status).replace(
            &format!("Via: {}\n", vias[0]),
            &format!("Via: {}\nVia: {}\n", vias[0], vias[1]),
        )
    };
    send(&mut n2, T0 + 5_100, "127.0.0.1:5060", &both("200 OK"));
    assert_eq!(lines(&run(&mut n2, &mut store)), ["127.0.0.1:5061 200 OK"]);
    // The owner retransmits its 2xx (no ACK yet): through us again.
    send(&mut n2, T0 + 5_600, "127.0.0.1:5060", &both("200 OK"));
    assert_eq!(lines(&run(&mut n2, &mut store)), ["127.0.0.1:5061 200 OK"]);
    // The phone's ACK goes on to the owner, our Via on top.
    let ack = ack_from_a(&ok)
        .replace("CSeq: 1 ACK", "CSeq: 2 ACK")
        .replace("z9hG4bKa2", "z9hG4bKa4");
    send(&mut n2, T0 + 5_700, A, &ack);
    let out = run(&mut n2, &mut store);
    assert_eq!(
        lines(&out),
        ["127.0.0.1:5060 ACK sip:drongo@127.0.0.1:5060"]
    );
    let (_, SipMessage::Request(a)) = &out[0] else {
        panic!()
    };
    assert!(a
        .headers
        .get("Via")
        .is_some_and(|v| v.contains("branch=z9hG4bKdrfw")));

    // A second re-INVITE, refused 491 by the owner: the member ACKs the owner's 491.
    let again = reinvite
        .replace("CSeq: 2 INVITE", "CSeq: 3 INVITE")
        .replace("z9hG4bKa3", "z9hG4bKa5");
    send(&mut n2, T0 + 6_000, A, &again);
    load_all(&mut n2, &store, T0 + 6_010);
    let out = run(&mut n2, &mut store);
    let Some((_, SipMessage::Request(fwd))) = out.iter().find(|(to, _)| to == "127.0.0.1:5060")
    else {
        panic!("{:?}", lines(&out))
    };
    let vias: Vec<&str> = fwd.headers.get_all("Via").collect();
    let busy = reply(fwd, "491 Request Pending").replace(
        &format!("Via: {}\n", vias[0]),
        &format!("Via: {}\nVia: {}\n", vias[0], vias[1]),
    );
    send(&mut n2, T0 + 6_100, "127.0.0.1:5060", &busy);
    let mut l = lines(&run(&mut n2, &mut store));
    l.sort();
    assert_eq!(
        l,
        [
            "127.0.0.1:5060 ACK sip:drongo@127.0.0.1:5060",
            "127.0.0.1:5061 491 Request Pending"
        ]
    );
}

/// A survivor adopting a call whose 2xx still waits for its ACK sends no copy of the 2xx
/// before its claim is known to have won; when the claim loses (someone else took the
/// call), it sends nothing for the call at all (hot-standby-takeover seed 314).
#[test]
fn no_copy_of_an_adopted_calls_2xx_leaves_before_its_claim_wins() {
    let mut n1 = member(1, 5060, &[(1, 1), (2, 1)]);
    let mut store = Store::new();
    confirmed_call(&mut n1, &mut store); // never ACKed: its 2xx is owed
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    n2.handle_members(T0 + 5_000, 1, &[(2, 1)], &[]);
    scan_all(&mut n2, &store, T0 + 5_000);
    load_all(&mut n2, &store, T0 + 5_000);
    let claim = n2.poll_batch().expect("the claim");
    assert!(claim.writes.iter().any(|w| w.key().starts_with("call/")));
    // The claim is in flight while the 2xx's timers come due: no copy leaves.
    let mut sent = Vec::new();
    for t in (1..=8).map(|i| T0 + 5_000 + i * 250) {
        n2.handle_input(t, Input::Timeout);
        while let Some(b) = n2.poll_batch() {
            sent.extend(b.transmits);
        }
    }
    assert!(sent.is_empty(), "{} transmits", sent.len());
    // Another member had taken it: the claim loses, and nothing is ever sent for it.
    let errors = (0..claim.writes.len())
        .map(|i| (i, WriteError::Conflict))
        .collect();
    n2.handle_input(
        T0 + 7_100,
        Input::CommitFailed {
            id: claim.id,
            errors,
        },
    );
    for t in (1..=8).map(|i| T0 + 7_100 + i * 500) {
        n2.handle_input(t, Input::Timeout);
        while let Some(b) = n2.poll_batch() {
            sent.extend(b.transmits);
        }
    }
    assert!(
        sent.is_empty(),
        "{} transmits after the claim lost",
        sent.len()
    );
}

/// Two members forwarded one request to the owner (their views of who serves it differed):
/// both copies are one transaction there, keyed by the phone's Via under theirs, so the
/// second is absorbed rather than answered 500 Out Of Order (lb-two-balancers seed 37 with
/// a balancer that ignores the node token: 500, then the real answer, for one INFO).
#[test]
fn copies_of_one_request_forwarded_by_two_members_are_one_transaction_at_the_owner() {
    let (mut store, _key, _b, ok, mut n1) = call_and_node_1();
    let info = from_a(&ok, "INFO", 2, "z9hG4bKtwice");
    let via = |port: u16, b: &str| {
        info.replacen(
            "Via: ",
            &format!("Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdrfw{b}\nVia: "),
            1,
        )
    };
    send(&mut n1, T0 + 5_000, "127.0.0.1:5070", &via(5070, "aaaa"));
    let l = lines(&run(&mut n1, &mut store));
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5062 INFO")),
        "relayed to the callee: {l:?}"
    );
    send(&mut n1, T0 + 5_100, "127.0.0.1:5080", &via(5080, "bbbb"));
    assert_eq!(lines(&run(&mut n1, &mut store)), Vec::<String>::new());
}
