//! With `[cluster] transactions = "distributed"`, a request relayed in a call (a re-INVITE,
//! an UPDATE, an INFO) is stored with its two transactions: when its node dies, the member
//! that takes the call over carries it on, and the party that sent it hears the other's
//! answer. With `local` transactions it dies with its node.

mod common;
use common::*;
use drongo_core::config::Transactions;

fn member(id: u16, port: u16, members: &[(u16, u64)], transactions: Transactions) -> Node {
    let mut cfg = Config::default();
    cfg.cluster.transactions = transactions;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut n = Node::new(cfg, addr, id, 100 + u64::from(id));
    n.handle_members(T0, 1, members, &[]);
    n
}

fn call_record(store: &Store) -> serde_json::Value {
    let r = store
        .iter()
        .find(|(k, _)| k.starts_with("call/"))
        .map(|(_, r)| r.clone())
        .expect("a call record");
    serde_json::from_slice(&r.value).unwrap()
}

/// A confirmed, ACKed call on node 1 whose caller's re-INVITE node 1 relayed to the
/// callee before it died: the store, the caller's 200 and the re-INVITE as the callee got it.
fn reinvite_in_progress(
    transactions: Transactions,
) -> (
    Store,
    drongo_core::message::Response,
    drongo_core::message::Request,
) {
    let mut n1 = member(1, 5060, &[(1, 1), (2, 1)], transactions);
    let mut store = Store::new();
    let (_b_inv, ok) = confirmed_call(&mut n1, &mut store);
    send(&mut n1, T0 + 40, A, &ack_from_a(&ok));
    run(&mut n1, &mut store);
    let to_b = relayed_reinvite(&mut n1, &mut store, &reinvite_from_a(&ok));
    assert_eq!(to_b.headers.get("CSeq"), Some("2 INVITE"));
    (store, ok, to_b)
}

#[test]
fn a_reinvite_in_progress_when_its_node_dies_is_answered_through_the_adopter() {
    let (mut store, ok, to_b) = reinvite_in_progress(Transactions::Distributed);
    let rec = call_record(&store);
    assert_eq!(rec["relays"].as_array().map(Vec::len), Some(1), "{rec}");
    assert_eq!(rec["txs"].as_array().map(Vec::len), Some(2), "{rec}");

    // Node 1 is dead. The callee's 200 reaches the survivor (the balancer sends it to the
    // adopter), which matches no transaction yet: the call is read and taken over, and
    // the 200 goes into its restored transaction, on to the caller.
    let mut n2 = member(2, 5070, &[(2, 1)], Transactions::Distributed);
    send(&mut n2, T0 + 3_000, B, &ok_for(&to_b));
    let read = load_all(&mut n2, &store, T0 + 3_010);
    assert!(read.iter().any(|k| k.starts_with("call/")), "{read:?}");
    let out = run(&mut n2, &mut store);
    let l = lines(&out);
    assert!(l.contains(&"127.0.0.1:5061 200 OK".to_string()), "{l:?}");
    let Some((_, SipMessage::Response(ok2))) = out.iter().find(|(to, _)| to == A) else {
        panic!("{l:?}")
    };
    assert_eq!(ok2.headers.get("CSeq"), Some("2 INVITE"));
    assert!(ok2
        .headers
        .get("Via")
        .is_some_and(|v| v.contains("branch=z9hG4bKa3")));
    assert_eq!(call_record(&store)["owner"], 2, "taken over");
    assert!(call_record(&store).get("relays").is_none(), "ended");

    // The caller's ACK reaches the callee with the CSeq of the re-INVITE it got.
    let ack = ack_from_a(&ok)
        .replace("CSeq: 1 ACK", "CSeq: 2 ACK")
        .replace("z9hG4bKa2", "z9hG4bKa4");
    send(&mut n2, T0 + 3_100, A, &ack);
    let out = run(&mut n2, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5062 ACK sip:bob@127.0.0.1:5062"]);
    let (_, SipMessage::Request(a)) = &out[0] else {
        panic!()
    };
    assert_eq!(a.headers.get("CSeq"), Some("2 ACK"));
}

#[test]
fn the_callers_retransmission_is_absorbed_and_the_relay_retransmitted_on_schedule() {
    let (mut store, ok, to_b) = reinvite_in_progress(Transactions::Distributed);
    let mut n2 = member(2, 5070, &[(2, 1)], Transactions::Distributed);
    // The caller retransmits its re-INVITE to the survivor.
    send(&mut n2, T0 + 1_550, A, &reinvite_from_a(&ok));
    load_all(&mut n2, &store, T0 + 1_560);
    let l = lines(&run(&mut n2, &mut store));
    // Not relayed again as a new request (CSeq 3 to the callee), nor refused out of
    // order (500): its restored transaction answers the copy.
    assert!(l.iter().all(|l| l == "127.0.0.1:5061 100 Trying"), "{l:?}");
    // The relay's copies to the callee go on where the dead node's schedule was: sent at
    // T0 + 50, copies due at + 500 and + 1,500 (the dead node's), then + 3,500: ours.
    let due = T0 + 50 + 500 + 1_000 + 2_000;
    assert_eq!(n2.poll_timeout(), Some(due));
    n2.handle_input(due, Input::Timeout);
    let out = run(&mut n2, &mut store);
    assert_eq!(
        lines(&out),
        ["127.0.0.1:5062 INVITE sip:bob@127.0.0.1:5062"]
    );
    let (_, SipMessage::Request(copy)) = &out[0] else {
        panic!()
    };
    assert_eq!(copy, &to_b, "the same request, its offer with it");
}

#[test]
fn with_local_transactions_the_relay_is_not_stored() {
    let (store, _ok, _to_b) = reinvite_in_progress(Transactions::Local);
    let rec = call_record(&store);
    assert!(rec.get("relays").is_none(), "{rec}");
    assert!(rec.get("txs").is_none(), "{rec}");
}

/// A CANCEL for a ringing call whose live owner is another member is forwarded to it; the
/// owner answers the INVITE 487 straight to the phone, whose ACK comes back the CANCEL's
/// way. That ACK goes on to the owner too, or the owner's INVITE transaction would send
/// its 487 until Timer H (lb-node-crash-during-reinvite seed 20, patience 8-20 s: 487 to
/// the caller every 4 s for 32 s).
#[test]
fn the_ack_of_a_cancelled_invite_follows_its_forwarded_cancel_to_the_owner() {
    let mut n1 = member(1, 5060, &[(1, 1), (2, 1)], Transactions::Local);
    let mut store = Store::new();
    register_bob(&mut n1, &mut store);
    send(&mut n1, T0 + 10, A, INVITE);
    let out = run(&mut n1, &mut store);
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!()
    };
    send(&mut n1, T0 + 20, B, &reply(&b_inv, "180 Ringing"));
    run(&mut n1, &mut store);

    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)], Transactions::Local);
    know_members_1_and_2(&mut n2, T0 + 100);
    let cancel = of_invite("CANCEL");
    send(&mut n2, T0 + 1_000, A, &cancel);
    load_all(&mut n2, &store, T0 + 1_010);
    let l = lines(&run(&mut n2, &mut store));
    assert!(
        l.contains(&"127.0.0.1:5060 CANCEL sip:bob@127.0.0.1".to_string()),
        "{l:?}"
    );
    // (The owner answers the CANCEL 200 through n2 and the INVITE 487 to the phone.)
    let ack =
        of_invite("ACK").replace("To: <sip:bob@127.0.0.1>", "To: <sip:bob@127.0.0.1>;tag=1.x");
    send(&mut n2, T0 + 1_200, A, &ack);
    let out = run(&mut n2, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5060 ACK sip:bob@127.0.0.1"]);
    let (_, SipMessage::Request(fwd)) = &out[0] else {
        panic!()
    };
    let vias: Vec<&str> = fwd.headers.get_all("Via").collect();
    assert_eq!(vias.len(), 2, "ours on top of the phone's: {vias:?}");
    assert!(vias[1].contains("branch=z9hG4bKa1"), "{vias:?}");
}

/// A relayed INFO's copies go on from its adopter on Timer E's schedule as laid from its
/// first copy, never early (lb-node-crash-during-reinvite seed 101: a restored non-INVITE
/// transaction counted no copies, and its next came 1 s after the overdue one, not 2 s).
#[test]
fn a_relayed_infos_copies_go_on_from_the_adopter_on_schedule() {
    let mut n1 = member(1, 5060, &[(1, 1), (2, 1)], Transactions::Distributed);
    let mut store = Store::new();
    let (_b_inv, ok) = confirmed_call(&mut n1, &mut store);
    send(&mut n1, T0 + 40, A, &ack_from_a(&ok));
    run(&mut n1, &mut store);
    let to_b = relayed_reinvite(&mut n1, &mut store, &from_a(&ok, "INFO", 2, "z9hG4bKi1"));
    assert_eq!(to_b.headers.get("CSeq"), Some("2 INFO"));

    let mut n2 = member(2, 5070, &[(2, 1)], Transactions::Distributed);
    send(&mut n2, T0 + 1_600, A, &from_a(&ok, "INFO", 2, "z9hG4bKi1"));
    load_all(&mut n2, &store, T0 + 1_610);
    run(&mut n2, &mut store);
    // Sent at T0 + 50; Timer E: copies at + 500, + 1,500 (the dead node's), + 3,500, + 7,500.
    for due in [T0 + 3_550, T0 + 7_550] {
        assert_eq!(n2.poll_timeout(), Some(due));
        n2.handle_input(due, Input::Timeout);
        let out = run(&mut n2, &mut store);
        assert_eq!(lines(&out), ["127.0.0.1:5062 INFO sip:bob@127.0.0.1:5062"]);
    }
    // The callee's 200 reaches the caller.
    send(&mut n2, T0 + 8_000, B, &ok_for(&to_b));
    assert_eq!(lines(&run(&mut n2, &mut store)), ["127.0.0.1:5061 200 OK"]);
}
