//! What the node does with the store's answers to its batches, named by batch id: a
//! retransmission waits for its first copy to leave, a compare-and-swap lost to another
//! owner drops the call without a word, and a 2xx taken back is never retransmitted.

mod common;

use common::*;

/// Takes every batch the node has, reports the reported ones as sent at `now`, and
/// returns the first lines sent to `to`.
fn take_sent(n: &mut Node, now: u64, to: &str) -> Vec<String> {
    let mut lines_to = Vec::new();
    while let Some(b) = n.poll_batch() {
        if b.report {
            n.handle_committed(now, &[b.id]);
        }
        for t in &b.transmits {
            if t.to.addr.to_string() == to {
                let m = parse_datagram(&t.bytes, &Limits::default()).unwrap();
                lines_to.push(first_line(&m));
            }
        }
    }
    lines_to
}

/// The callee answers the call's INVITE at T0 + 30; returns the B-leg INVITE and the
/// batch with the call's record and the 200 for the caller, which the store has not
/// answered yet.
fn answered_unsaved(n: &mut Node) -> (drongo_core::message::Request, Batch) {
    let mut store = BTreeMap::new();
    register_bob(n, &mut store);
    send(n, T0 + 10, A, INVITE);
    let out = run(n, &mut store);
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!()
    };
    send(n, T0 + 30, B, &reply(&b_inv, "200 OK"));
    let batch = n.poll_batch().unwrap();
    assert!(batch.report && batch.writes.len() == 1);
    (b_inv, batch)
}

#[test]
fn a_2xx_is_retransmitted_counting_from_when_its_first_copy_left() {
    let mut n = node(Config::default());
    let (_, first) = answered_unsaved(&mut n);
    // The store takes 2 s. Meanwhile T1 and 2·T1 pass: no copy of the 200 is made (it
    // would only queue behind the first and leave with it).
    for t in [T0 + 530, T0 + 1530] {
        n.handle_timeout(t);
        assert_eq!(take_sent(&mut n, t, A), Vec::<String>::new(), "at {t}");
    }
    assert_eq!(n.metrics().retransmissions_dropped, 2);
    // The first copy leaves at T0 + 2000: the next is due 2 s (T1·2², the copies already
    // due counted) after that, not before.
    n.handle_committed(T0 + 2_000, &[first.id]);
    for t in (T0 + 2_000..T0 + 4_000).step_by(100) {
        n.handle_timeout(t);
        assert_eq!(take_sent(&mut n, t, A), Vec::<String>::new(), "at {t}");
    }
    n.handle_timeout(T0 + 4_000);
    assert_eq!(take_sent(&mut n, T0 + 4_000, A), ["200 OK"]);
}

/// A confirmed call whose caller hangs up (the record is to become `Ending`, the callee
/// to get our BYE), and whose write loses its compare-and-swap; returns the node, its
/// store and the call's key.
fn bye_lost_its_cas() -> (Node, Store, String) {
    let (mut n, store, _b_inv, ok) = acked_call();
    send(&mut n, T0 + 100, A, &from_a(&ok, "BYE", 2, "z9hG4bKa3"));
    let batch = n.poll_batch().unwrap();
    let key = batch.writes[0].key().to_string();
    let errors = vec![(0, WriteError::Conflict)];
    n.handle_input(
        T0 + 110,
        Input::CommitFailed {
            id: batch.id,
            errors,
        },
    );
    assert!(n.poll_batch().is_none(), "nothing before the read-back");
    (n, store, key)
}

#[test]
fn a_call_whose_write_lost_to_another_owner_is_dropped_without_a_word() {
    let (mut n, store, key) = bye_lost_its_cas();
    // Node 2 has taken the call over: the record names it.
    let mut record = store[&key].clone();
    let text = String::from_utf8(record.value.clone()).unwrap();
    assert!(text.contains("\"owner\":1"), "{text}");
    record.value = text.replace("\"owner\":1", "\"owner\":2").into_bytes();
    record.version += 1;
    n.handle_input(
        T0 + 120,
        Input::Record {
            key,
            record: Some(record),
        },
    );
    assert!(
        n.poll_batch().is_none(),
        "no BYE, no error response, no write: the call is node 2's"
    );
    assert_eq!(n.active_calls(), 0);
    n.handle_timeout(T0 + 60_000);
    assert!(n.poll_batch().is_none(), "and nothing later either");
}

#[test]
fn a_lost_compare_and_swap_on_our_own_record_ends_the_call_on_its_version() {
    let (mut n, store, key) = bye_lost_its_cas();
    // Our own earlier write landed after all (version 2): still ours, so it ends as after
    // any failed write, writing on the version the store holds.
    let mut record = store[&key].clone();
    record.version = 2;
    n.handle_input(
        T0 + 120,
        Input::Record {
            key,
            record: Some(record),
        },
    );
    let again = n.poll_batch().unwrap();
    assert!(
        matches!(
            &again.writes[..],
            [StoreWrite::Put {
                expect: Some(2),
                ..
            }]
        ),
        "{:?}",
        again.writes
    );
    let to_b: Vec<String> = again
        .transmits
        .iter()
        .filter(|t| t.to.addr.to_string() == B)
        .map(|t| first_line(&parse_datagram(&t.bytes, &Limits::default()).unwrap()))
        .collect();
    assert_eq!(to_b, ["BYE sip:bob@127.0.0.1:5062"]);
}

#[test]
fn a_2xx_taken_back_after_its_call_ended_is_never_retransmitted() {
    let mut n = node(Config::default());
    let (b_inv, first) = answered_unsaved(&mut n);
    // While the record waits for the store, the callee hangs up and the caller answers
    // our BYE: the call is over, its 2xx left to retransmit on its own until the ACK.
    send(&mut n, T0 + 40, B, &from_b(&b_inv, "BYE", 2, "z9hG4bKb9"));
    let ending = n.poll_batch().unwrap();
    let bye = ending
        .transmits
        .iter()
        .map(|t| parse_datagram(&t.bytes, &Limits::default()).unwrap())
        .find_map(|m| match m {
            SipMessage::Request(r) if r.method.as_str() == "BYE" => Some(r),
            _ => None,
        })
        .expect("a BYE to the caller");
    n.handle_committed(T0 + 45, &[ending.id]);
    send(&mut n, T0 + 50, A, &ok_for(&bye));
    take_sent(&mut n, T0 + 50, A);
    assert_eq!(n.active_calls(), 0);
    // Now the record's write fails: the 200 never left, and the caller gets 500 instead.
    let errors = vec![(0, WriteError::Unavailable)];
    n.handle_input(
        T0 + 60,
        Input::CommitFailed {
            id: first.id,
            errors,
        },
    );
    let mut to_a = take_sent(&mut n, T0 + 60, A);
    for t in (T0 + 100..T0 + 40_000).step_by(100) {
        n.handle_timeout(t);
        to_a.extend(take_sent(&mut n, t, A));
    }
    assert!(
        to_a.iter().all(|l| l != "200 OK"),
        "a 200 the caller never had must not follow its 500: {to_a:?}"
    );
    assert!(
        to_a.iter().any(|l| l == "500 Call State Not Saved"),
        "{to_a:?}"
    );
}

/// The caller's BYE ends the call while the store is down: its 200 waits for the record
/// (`Ending`) and is taken back when that write fails. The call ends all the same once
/// the store is back; the caller, still retransmitting its BYE, must then get 200, not
/// 481: Drongo did what it asked. (Found by the continuity check: store-outage seed 7.)
#[test]
fn a_bye_whose_200_was_taken_back_gets_200_after_its_call_is_gone() {
    let (mut n, mut store, _b_inv, ok) = acked_call();
    let bye = from_a(&ok, "BYE", 2, "z9hG4bKa3");
    send(&mut n, T0 + 100, A, &bye);
    let batch = n.poll_batch().unwrap();
    assert!(!batch.writes.is_empty());
    fail(&mut n, T0 + 110, &batch);
    // The store is back: the runtime reads the record back, and the call ends (BYE to the
    // callee, answered; record deleted).
    let key = batch.writes[0].key().to_string();
    let record = store.get(&key).cloned();
    n.handle_input(T0 + 150, Input::Record { key, record });
    let out = run(&mut n, &mut store);
    let out = answer_byes(&mut n, &mut store, &out, T0 + 200);
    assert!(
        lines(&out).iter().all(|l| !l.ends_with("200 OK")),
        "{:?}",
        lines(&out)
    );
    assert_eq!(n.active_calls(), 0);
    assert!(store.keys().all(|k| !k.starts_with("call/")), "{store:?}");
    // The caller's BYE retransmission (its transaction was dropped with the batch).
    send(&mut n, T0 + 600, A, &bye);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5061 200 OK"]);
    // Past 64·T1 the dialog is forgotten: 481 as for any unknown dialog.
    send(
        &mut n,
        T0 + 40_000,
        A,
        &bye.replace("z9hG4bKa3", "z9hG4bKa4"),
    );
    let late = lines(&run(&mut n, &mut store));
    assert_eq!(late, ["127.0.0.1:5061 481 Call/Transaction Does Not Exist"]);
}

/// The sweep deletes a call record that no call of ours holds (here: a create that landed
/// after its call ended), and leaves alone our live calls and other nodes' records.
#[test]
fn the_sweep_deletes_call_records_no_call_holds() {
    let (mut n, store, _b_inv, _ok) = acked_call();
    let live = store
        .values()
        .find(|r| r.key.starts_with("call/"))
        .unwrap()
        .clone();
    let mut stray = live.clone();
    stray.key = "call/1.stray".into();
    let mut theirs = live.clone();
    theirs.key = "call/2.theirs".into();
    let text = String::from_utf8(theirs.value.clone()).unwrap();
    theirs.value = text.replace("\"owner\":1", "\"owner\":2").into_bytes();
    n.handle_input(T0 + 500, Input::Sweep(vec![live, stray.clone(), theirs]));
    let b = n.poll_batch().expect("a batch with the delete");
    assert_eq!(
        b.writes,
        [StoreWrite::Delete {
            key: stray.key,
            expect: stray.version
        }]
    );
    assert!(b.transmits.is_empty());
    assert!(n.poll_batch().is_none());
    assert_eq!(n.metrics().records_swept, 1);
}

/// A retransmission is held back only while its own first copy waits for the store: an
/// INFO relayed to a silent callee goes on with its schedule while another write of the
/// same call (the caller's BYE) waits. (Found by the schedule's upper bounds: steady seed
/// 6, a copy 8 s after the previous one, past T2.)
#[test]
fn a_retransmission_is_not_dropped_for_another_write_of_its_call() {
    let (mut n, mut store, _b_inv, ok) = acked_call();
    send(&mut n, T0 + 50, A, &from_a(&ok, "INFO", 2, "z9hG4bKa5"));
    let out = lines(&run(&mut n, &mut store));
    assert_eq!(out, ["127.0.0.1:5062 INFO sip:bob@127.0.0.1:5062"]);
    // The caller hangs up; the store has not answered that batch when Timer E fires.
    send(&mut n, T0 + 300, A, &from_a(&ok, "BYE", 3, "z9hG4bKa6"));
    let pending = n.poll_batch().unwrap();
    assert!(pending.report && !pending.writes.is_empty());
    n.handle_timeout(T0 + 550);
    let to_b = take_sent(&mut n, T0 + 550, B);
    assert!(to_b.iter().any(|l| l.starts_with("INFO")), "{to_b:?}");
    assert_eq!(n.metrics().retransmissions_dropped, 0);
}

/// A REGISTER query is not answered from bindings whose write waits for the store (that
/// write may fail and be taken back): it is left for its retransmission, answered once the
/// store has. (Found by the registration checks: chaos seed 113, a lookup listed a binding
/// whose write then failed.)
#[test]
fn a_lookup_waits_for_the_write_of_its_aor() {
    let mut n = node(Config::default());
    send(&mut n, T0, B, REGISTER_BOB);
    let write = n.poll_batch().unwrap();
    assert!(write.report && !write.writes.is_empty());
    let query = REGISTER_BOB
        .replace("Contact: <sip:bob@127.0.0.1:5062>\nExpires: 600\n", "")
        .replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER")
        .replace("z9hG4bKr1", "z9hG4bKr2");
    send(&mut n, T0 + 10, B, &query);
    assert!(
        n.poll_batch().is_none(),
        "no answer while the binding is not durable"
    );
    assert_eq!(n.metrics().lookups_deferred, 1);
    fail(&mut n, T0 + 20, &write);
    while n.poll_batch().is_some() {}
    // The write failed and the read-back found nothing: the retransmitted query is told so.
    n.handle_input(
        T0 + 30,
        Input::Record {
            key: "reg/bob".into(),
            record: None,
        },
    );
    send(&mut n, T0 + 510, B, &query);
    let b = n.poll_batch().unwrap();
    let m = parse_datagram(&b.transmits[0].bytes, &Limits::default()).unwrap();
    assert_eq!(first_line(&m), "200 OK");
    let SipMessage::Response(r) = m else { panic!() };
    assert!(r.headers.get("Contact").is_none(), "{r:?}");
}

/// A read-back taken before a later write of its AOR landed must not undo that write: a
/// de-REGISTER whose answer was lost (it happened), a REGISTER answered meanwhile (its
/// write made on the truth, and durable), then the read-back of the first write, taken
/// before the second landed, says "nothing": the binding stays. (Found by `leader-crash`
/// seed 166: a restarted node's expiry delete failed, the phone registered again, and the
/// late read-back wiped the new binding from memory while the store held it.)
#[test]
fn a_read_back_older_than_a_later_write_is_ignored() {
    let mut n = node(Config::default());
    let mut store = Store::new();
    register_bob(&mut n, &mut store);
    let unregister = REGISTER_BOB
        .replace("Expires: 600", "Expires: 0")
        .replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER")
        .replace("z9hG4bKr1", "z9hG4bKr2");
    send(&mut n, T0 + 10, B, &unregister);
    let delete = n.poll_batch().unwrap();
    for w in delete.writes.clone() {
        commit(&mut store, w);
    }
    fail(&mut n, T0 + 20, &delete);
    while n.poll_batch().is_some() {}
    let again = REGISTER_BOB
        .replace("CSeq: 1 REGISTER", "CSeq: 3 REGISTER")
        .replace("z9hG4bKr1", "z9hG4bKr3");
    send(&mut n, T0 + 30, B, &again);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5062 200 OK"]);
    assert!(store.contains_key("reg/bob"));
    n.handle_input(
        T0 + 40,
        Input::Record {
            key: "reg/bob".into(),
            record: None,
        },
    );
    let query = REGISTER_BOB
        .replace("Contact: <sip:bob@127.0.0.1:5062>\nExpires: 600\n", "")
        .replace("CSeq: 1 REGISTER", "CSeq: 4 REGISTER")
        .replace("z9hG4bKr1", "z9hG4bKr4");
    send(&mut n, T0 + 50, B, &query);
    let b = n.poll_batch().unwrap();
    let SipMessage::Response(r) =
        parse_datagram(&b.transmits[0].bytes, &Limits::default()).unwrap()
    else {
        panic!()
    };
    assert!(
        r.headers.get("Contact").is_some(),
        "the binding was wiped: {r:?}"
    );
}

/// A claim's owner index entry may exist already: an earlier claim of the same member
/// lost its call's compare-and-swap but wrote the entry (a batch is not one transaction).
/// The next claim's put of the entry then conflicts while its claim of the call wins: the
/// member keeps the call and ends nothing (cluster-chaos seed 476 ended the call it had
/// just won, and sent its 2xx twice). No message reveals the owner index.
#[test]
fn a_claim_whose_owner_index_entry_exists_keeps_the_call() {
    let all = [(1, 1), (2, 1)];
    let mut n1 = Node::new(Config::default(), "127.0.0.1:5060".parse().unwrap(), 1, 101);
    n1.handle_members(T0, 1, &all, &[]);
    let mut store = Store::new();
    register_bob(&mut n1, &mut store);
    numbered_call(&mut n1, &mut store, 0);

    let mut n2 = Node::new(Config::default(), "127.0.0.1:5070".parse().unwrap(), 2, 102);
    n2.handle_members(T0, 1, &all, &[]);
    n2.handle_members(T0 + 5_000, 1, &[(2, 1)], &[]);
    scan_all(&mut n2, &store, T0 + 5_000);
    load_all(&mut n2, &store, T0 + 5_000);
    let claim = n2.poll_batch().expect("the claim");
    let i = claim
        .writes
        .iter()
        .position(|w| w.key().starts_with("owns/2/"))
        .expect("its owner index entry");
    for (j, w) in claim.writes.iter().enumerate() {
        if j != i {
            commit(&mut store, w.clone());
        }
    }
    let errors = vec![(i, WriteError::Conflict)];
    n2.handle_input(
        T0 + 5_000,
        Input::CommitFailed {
            id: claim.id,
            errors,
        },
    );
    assert_eq!(n2.active_calls(), 1, "the call won is kept");
    n2.handle_timeout(T0 + 6_000);
    let l = lines(&run(&mut n2, &mut store));
    assert!(!l.iter().any(|l| l.contains("BYE")), "{l:?}");
}
