//! The registrar in a cluster (`node::bindings`): every member finds every registration.
//! A member learns of another's REGISTER through the store's watch, or reads the AOR when
//! a lookup misses; REGISTERs on two members race as compare-and-swaps and the loser's is
//! applied on the truth; only the leader writes the removal of expired bindings.

mod common;
use common::*;

/// Node `id` at its own address, a member of a cluster of nodes 1 and 2.
fn member(id: u16, port: u16) -> Node {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut n = Node::new(Config::default(), addr, id, 100 + u64::from(id));
    n.handle_members(T0, 1, &[(1, 1), (2, 1)], &[]);
    n
}

/// Bob's REGISTER with this Call-ID, CSeq and contact port.
fn register(call_id: &str, cseq: u32, port: u16) -> String {
    REGISTER_BOB
        .replace("Call-ID: reg1", &format!("Call-ID: {call_id}"))
        .replace("CSeq: 1 REGISTER", &format!("CSeq: {cseq} REGISTER"))
        .replace("bob@127.0.0.1:5062>", &format!("bob@127.0.0.1:{port}>"))
        .replace("z9hG4bKr1", &format!("z9hG4bK{call_id}{cseq}"))
}

fn watched(n: &mut Node, store: &Store, key: &str, now: u64) {
    let record = store.get(key).cloned();
    n.handle_input(
        now,
        Input::Watched {
            key: key.to_string(),
            record,
        },
    );
}

/// Bob registered through member 1; an INVITE to him through member 2, whose watch has
/// not brought the record yet: it waits for a read. The store and member 2.
fn invite_waiting_for_its_lookup() -> (Store, Node) {
    let mut store = Store::new();
    let mut n1 = member(1, 5060);
    let mut n2 = member(2, 5070);
    register_bob(&mut n1, &mut store);
    send(&mut n2, T0 + 10, A, INVITE);
    assert!(lines(&run(&mut n2, &mut store)).is_empty());
    (store, n2)
}

#[test]
fn a_call_through_another_member_reaches_a_phone_that_registered_a_moment_ago() {
    let (mut store, mut n2) = invite_waiting_for_its_lookup();
    assert_eq!(load_all(&mut n2, &store, T0 + 15), ["reg/bob"]);
    let out = lines(&run(&mut n2, &mut store));
    assert_sent(&out, "127.0.0.1:5062 INVITE sip:bob@127.0.0.1:5062");
    assert_eq!(n2.metrics().lookups_read_through, 1);
    // Found now: the next lookup reads nothing.
    let again = INVITE
        .replace("callA", "callA2")
        .replace("z9hG4bKa1", "z9hG4bKa9");
    send(&mut n2, T0 + 20, A, &again);
    assert_sent(
        &lines(&run(&mut n2, &mut store)),
        "127.0.0.1:5062 INVITE sip:bob@127.0.0.1:5062",
    );
    assert!(n2.poll_load().is_none());
}

/// A CANCEL for an INVITE parked while its callee's bindings are read: the INVITE gets 487
/// at once and makes no call when the read answers (cluster-chaos seed 83 rang the callee
/// for a caller that had given up, and never answered its INVITE).
#[test]
fn an_invite_cancelled_while_its_lookup_reads_makes_no_call() {
    let (mut store, mut n2) = invite_waiting_for_its_lookup();
    send(&mut n2, T0 + 12, A, &of_invite("CANCEL"));
    assert_eq!(
        lines(&run(&mut n2, &mut store)),
        [
            "127.0.0.1:5061 200 OK",
            "127.0.0.1:5061 487 Request Terminated"
        ]
    );
    assert_eq!(load_all(&mut n2, &store, T0 + 15), ["reg/bob"]);
    assert!(
        lines(&run(&mut n2, &mut store)).is_empty(),
        "no INVITE to bob"
    );
    assert_eq!(n2.active_calls(), 0);
}

#[test]
fn a_lookup_that_reads_nothing_is_answered_as_a_miss() {
    let mut store = Store::new();
    let mut n2 = member(2, 5070);
    send(&mut n2, T0 + 10, A, INVITE);
    assert_eq!(load_all(&mut n2, &store, T0 + 15), ["reg/bob"]);
    let out = lines(&run(&mut n2, &mut store));
    assert_eq!(out, ["127.0.0.1:5061 404 Not Found"]);
    // And a store that does not answer: 503.
    let again = INVITE.replace("z9hG4bKa1", "z9hG4bKa9");
    send(&mut n2, T0 + 20, A, &again);
    let key = n2.poll_load().unwrap();
    n2.handle_input(T0 + 25, Input::Loaded { key, record: None });
    let out = lines(&run(&mut n2, &mut store));
    assert_eq!(out, ["127.0.0.1:5061 503 Service Unavailable"]);
}

#[test]
fn a_member_follows_registrations_through_the_watch() {
    let mut store = Store::new();
    let mut n1 = member(1, 5060);
    let mut n2 = member(2, 5070);
    register_bob(&mut n1, &mut store);
    watched(&mut n2, &store, "reg/bob", T0 + 5);
    // An INVITE through node 2 is routed at once, with no read.
    send(&mut n2, T0 + 10, A, INVITE);
    assert_sent(
        &lines(&run(&mut n2, &mut store)),
        "127.0.0.1:5062 INVITE sip:bob@127.0.0.1:5062",
    );
    assert!(n2.poll_load().is_none(), "no read");
    assert_eq!(n2.metrics().lookups_read_through, 0);
    // Bob de-registers through node 1; the watch tells node 2.
    let gone = register("reg1", 2, 5062).replace("Expires: 600", "Expires: 0");
    send(&mut n1, T0 + 1_000, B, &gone);
    run(&mut n1, &mut store);
    assert!(!store.contains_key("reg/bob"));
    watched(&mut n2, &store, "reg/bob", T0 + 1_005);
    assert_eq!(n2.registrations(), 0);
}

/// A REGISTER query lists what the store holds, not the member's copy, which may lag: a
/// binding added through another member is listed, and one removed there is not.
#[test]
fn a_register_query_in_a_cluster_lists_what_the_store_holds() {
    let mut store = Store::new();
    let mut n1 = member(1, 5060);
    let mut n2 = member(2, 5070);
    register_bob(&mut n1, &mut store);
    watched(&mut n2, &store, "reg/bob", T0 + 5);
    let gone = register("reg1", 2, 5062).replace("Expires: 600", "Expires: 0");
    send(&mut n1, T0 + 10, B, &gone);
    run(&mut n1, &mut store);
    // Node 2's watch has not told it yet.
    let query = register("q", 1, 5062).replace("Contact: <sip:bob@127.0.0.1:5062>\n", "");
    send(&mut n2, T0 + 20, B, &query);
    assert!(run(&mut n2, &mut store).is_empty());
    assert_eq!(load_all(&mut n2, &store, T0 + 25), ["reg/bob"]);
    let out = run(&mut n2, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5062 200 OK"]);
    let SipMessage::Response(ok) = &out[0].1 else {
        panic!()
    };
    assert_eq!(ok.headers.get("Contact"), None, "{ok:?}");
}

/// Two phones of bob's register at once, one through each member. Node 2 has not seen
/// node 1's write: its compare-and-swap loses, its 200 is withdrawn, the record is read
/// back, and the phone's retransmission is applied on it. Both bindings stay.
#[test]
fn racing_registers_on_two_members_lose_no_binding() {
    let mut store = Store::new();
    let mut n1 = member(1, 5060);
    let mut n2 = member(2, 5070);
    register_bob(&mut n1, &mut store);
    let other = register("reg2", 1, 5064);
    send(&mut n2, T0 + 10, B, &other);
    let batch = n2.poll_batch().unwrap();
    assert_eq!(batch.writes.len(), 1);
    assert_eq!(
        store.get("reg/bob").map(|r| Some(r.version)),
        Some(Some(T0)),
        "node 1's record"
    );
    // The write expected no record: it loses.
    n2.handle_input(
        T0 + 12,
        Input::CommitFailed {
            id: batch.id,
            errors: vec![(0, WriteError::Conflict)],
        },
    );
    assert!(lines(&run(&mut n2, &mut store)).is_empty(), "no 200");
    n2.handle_input(
        T0 + 14,
        Input::Record {
            key: "reg/bob".into(),
            record: store.get("reg/bob").cloned(),
        },
    );
    send(&mut n2, T0 + 500, B, &other);
    let out = run(&mut n2, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5062 200 OK"]);
    let SipMessage::Response(ok) = &out[0].1 else {
        panic!()
    };
    assert_eq!(ok.headers.get_all("Contact").count(), 2, "{ok:?}");
    let rec = String::from_utf8_lossy(&store["reg/bob"].value).to_string();
    assert!(rec.contains("5062") && rec.contains("5064"), "{rec}");
}

/// Every member holds bob's binding; when it expires only the leader writes its removal,
/// fenced by its term.
#[test]
fn only_the_leader_removes_expired_bindings() {
    let mut store = Store::new();
    let mut n1 = member(1, 5060);
    let mut n2 = member(2, 5070);
    let short = REGISTER_BOB.replace("Expires: 600", "Expires: 60");
    send(&mut n1, T0, B, &short);
    run(&mut n1, &mut store);
    // A second phone keeps the record alive past the first binding's expiry.
    let long = register("reg2", 1, 5064);
    send(&mut n1, T0 + 1, B, &long);
    run(&mut n1, &mut store);
    watched(&mut n2, &store, "reg/bob", T0 + 5);
    assert_eq!(n2.registrations(), 2);
    let expired = T0 + 61_000;
    n1.handle_timeout(expired);
    n2.handle_timeout(expired);
    assert!(n1.poll_batch().is_none() && n2.poll_batch().is_none());
    assert!(
        n2.poll_timeout().is_none_or(|t| t > expired),
        "no busy loop"
    );
    // Node 2 becomes the leader: the watchdog is its, expired bindings included.
    n2.handle_input(expired, Input::Leader { term: Some(7) });
    n2.handle_timeout(expired + 1);
    let batch = n2.poll_batch().expect("the watchdog's write");
    assert_eq!(batch.writes.len(), 1);
    // A chore: the store refuses it once a later leader took office.
    assert_eq!(batch.writes[0].fence(), Some(7), "{:?}", batch.writes[0]);
    for w in batch.writes {
        commit(&mut store, w);
    }
    let rec = String::from_utf8_lossy(&store["reg/bob"].value).to_string();
    assert!(
        !rec.contains("bob@127.0.0.1:5062") && rec.contains("bob@127.0.0.1:5064"),
        "{rec}"
    );
}

/// A phone registered over a connection to member 1 (no Path) is reached through that
/// flow alone: when member 1 leaves, the leader removes its binding (a chore, fenced), and
/// leaves a phone registered over UDP alone. A member the leader never saw is left alone.
#[test]
fn the_leader_removes_bindings_whose_connection_died_with_its_member() {
    use drongo_core::transaction::{Peer, Transport};
    let mut store = Store::new();
    let mut n1 = member(1, 5060);
    let mut n2 = member(2, 5070);
    // Bob over TCP to member 1; carol over UDP to member 1.
    let tcp = REGISTER_BOB.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let from = Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:5062".parse().unwrap(),
    };
    let bytes = tcp.replace('\n', "\r\n").into_bytes();
    n1.handle_input(T0, Input::Datagram { from, bytes });
    run(&mut n1, &mut store);
    let carol = REGISTER_BOB
        .replace("bob@", "carol@")
        .replace("reg1", "regc")
        .replace("z9hG4bKr1", "z9hG4bKrc");
    send(&mut n1, T0 + 1, B, &carol);
    run(&mut n1, &mut store);
    assert!(String::from_utf8_lossy(&store["reg/bob"].value).contains("\"flow\":1"));
    watched(&mut n2, &store, "reg/bob", T0 + 5);
    watched(&mut n2, &store, "reg/carol", T0 + 5);
    n2.handle_input(T0 + 10, Input::Leader { term: Some(3) });
    assert!(
        n2.poll_batch().is_none(),
        "member 1 lives: nothing to remove"
    );
    // A member the leader never saw: left alone.
    let addr = "127.0.0.1:5080".parse().unwrap();
    let mut n3 = Node::new(Config::default(), addr, 3, 103);
    n3.handle_members(T0, 1, &[(3, 1)], &[]);
    watched(&mut n3, &store, "reg/bob", T0 + 5);
    n3.handle_input(T0 + 10, Input::Leader { term: Some(4) });
    assert!(
        n3.poll_batch().is_none(),
        "a member never seen is not taken for dead"
    );
    // Member 1 leaves: bob's binding goes, carol's stays.
    n2.handle_members(T0 + 20, 1, &[(2, 1)], &[]);
    let (_, written) = run_noting(&mut n2, &mut store);
    assert_eq!(written, [("reg/bob".to_string(), Some(3))]);
    assert!(!store.contains_key("reg/bob"));
    assert!(store.contains_key("reg/carol"));
    assert_eq!(n2.metrics().flow_bindings_removed, 1);
}
