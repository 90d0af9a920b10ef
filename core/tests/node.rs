//! The node end to end in virtual time: registration, a call with its store writes ordered
//! before the 200, the caller's ACK, BYE, and a restart that reloads the confirmed call.

mod common;

use common::*;
use drongo_core::config::User;

#[test]
fn call_register_answer_ack_bye_leaves_no_state() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    let (_b_inv, ok) = confirmed_call(&mut n, &mut store);
    send(&mut n, T0 + 40, A, &ack_from_a(&ok));
    assert!(run(&mut n, &mut store).is_empty());
    // No retransmission of the 200 once ACKed.
    n.handle_timeout(T0 + 5_000);
    assert!(run(&mut n, &mut store).is_empty());
    let bye = format!(
        "BYE sip:drongo@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa3\n\
         Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: {}\nCall-ID: callA\n\
         CSeq: 2 BYE\nContent-Length: 0\n\n",
        ok.headers.get("To").unwrap()
    );
    send(&mut n, T0 + 6_000, A, &bye);
    let out = run(&mut n, &mut store);
    assert_eq!(
        lines(&out),
        [
            "127.0.0.1:5061 200 OK",
            "127.0.0.1:5062 BYE sip:bob@127.0.0.1:5062"
        ]
    );
    // The record says the call is ending until the callee has answered our BYE, so that a
    // restarted node would send that BYE again.
    assert_eq!(n.active_calls(), 1);
    assert!(store.keys().any(|k| k.starts_with("call/")));
    assert!(answer_byes(&mut n, &mut store, &out, T0 + 6_100).is_empty());
    assert_eq!(n.active_calls(), 0);
    assert_eq!(calls_left(&store), 0);
    assert_eq!(n.metrics().calls_answered, 1);
}

#[test]
fn unacked_2xx_is_retransmitted_then_both_legs_get_bye() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    confirmed_call(&mut n, &mut store);
    let mut sent = Vec::new();
    let mut all = Vec::new();
    while let Some(at) = n.poll_timeout().filter(|t| *t <= T0 + 32_100) {
        n.handle_timeout(at);
        let out = run(&mut n, &mut store);
        for l in lines(&out) {
            sent.push(format!("{} {l}", at - T0));
        }
        all.extend(out);
    }
    assert_eq!(
        sent,
        [
            "530 127.0.0.1:5061 200 OK",
            "1530 127.0.0.1:5061 200 OK",
            "3530 127.0.0.1:5061 200 OK",
            "7530 127.0.0.1:5061 200 OK",
            "11530 127.0.0.1:5061 200 OK",
            "15530 127.0.0.1:5061 200 OK",
            "19530 127.0.0.1:5061 200 OK",
            "23530 127.0.0.1:5061 200 OK",
            "27530 127.0.0.1:5061 200 OK",
            "31530 127.0.0.1:5061 200 OK",
            "32030 127.0.0.1:5061 BYE sip:alice@127.0.0.1:5061",
            "32030 127.0.0.1:5062 BYE sip:bob@127.0.0.1:5062",
        ]
    );
    answer_byes(&mut n, &mut store, &all, T0 + 32_100);
    assert_eq!(calls_left(&store), 0);
}

#[test]
fn confirmed_call_survives_a_restart_and_ends_with_bye_from_the_callee() {
    let (n, mut store, b_inv, _ok) = acked_call();
    drop(n);
    // A new process on the same store.
    let mut n = restarted(&store, 9, T0 + 60_000);
    assert_eq!(n.active_calls(), 1);
    assert_eq!(n.registrations(), 1);
    let bye = from_b(&b_inv, "BYE", 7, "z9hG4bKb9");
    send(&mut n, T0 + 61_000, B, &bye);
    let out = run(&mut n, &mut store);
    assert_eq!(
        lines(&out),
        [
            "127.0.0.1:5062 200 OK",
            "127.0.0.1:5061 BYE sip:alice@127.0.0.1:5061"
        ]
    );
    answer_byes(&mut n, &mut store, &out, T0 + 61_100);
    assert_eq!(n.active_calls(), 0);
    assert_eq!(calls_left(&store), 0);
}

#[test]
fn unacked_2xx_is_retransmitted_by_the_restarted_node_until_the_ack() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    let (_b_inv, ok) = confirmed_call(&mut n, &mut store);
    // The node dies 1 s after the answer, before the caller's ACK came.
    drop(n);
    let mut n = restarted(&store, 9, T0 + 1_030);
    assert!(
        run(&mut n, &mut store).is_empty(),
        "nothing off the schedule"
    );
    // The 2xx left at T0 + 30, its first copy was due at T0 + 530 (the dead node's), the
    // second at T0 + 1_530: the restored node goes on with the RFC's schedule.
    assert_eq!(n.poll_timeout(), Some(T0 + 1_530));
    n.handle_timeout(T0 + 1_530);
    assert_eq!(
        lines(&run(&mut n, &mut store)),
        ["127.0.0.1:5061 200 OK"],
        "the restored node goes on retransmitting the 2xx"
    );
    assert_eq!(n.poll_timeout(), Some(T0 + 3_530), "then 4·T1 later");
    send(&mut n, T0 + 2_000, A, &ack_from_a(&ok));
    run(&mut n, &mut store);
    n.handle_timeout(T0 + 3_530);
    assert!(run(&mut n, &mut store).is_empty(), "the ACK stopped it");
    assert_eq!(n.active_calls(), 1);
}

#[test]
fn a_2xx_past_its_ack_window_is_taken_as_acked_on_restart() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    confirmed_call(&mut n, &mut store);
    drop(n);
    let mut n = restarted(&store, 9, T0 + 40_000);
    assert!(
        run(&mut n, &mut store).is_empty(),
        "no retransmission, no BYE"
    );
    assert_eq!(n.active_calls(), 1);
}

#[test]
fn unknown_user_404_known_but_unregistered_480_and_auth_challenge() {
    let cfg = Config {
        users: vec![User {
            name: "bob".into(),
            password: "pw".into(),
        }],
        ..Config::default()
    };
    let mut n = node(cfg.clone());
    let mut store = BTreeMap::new();
    send(&mut n, T0, A, &INVITE.replace("sip:bob@", "sip:carol@"));
    assert_eq!(
        lines(&run(&mut n, &mut store)),
        ["127.0.0.1:5061 404 Not Found"]
    );
    send(&mut n, T0, A, &INVITE.replace("z9hG4bKa1", "z9hG4bKa9"));
    assert_eq!(
        lines(&run(&mut n, &mut store)),
        ["127.0.0.1:5061 480 Temporarily Unavailable"]
    );
    let mut n = node(Config {
        auth_required: true,
        ..cfg
    });
    send(&mut n, T0, A, INVITE);
    let out = run(&mut n, &mut store);
    assert_eq!(
        lines(&out),
        ["127.0.0.1:5061 407 Proxy Authentication Required"]
    );
    let challenges: Vec<&str> = out[0].1.headers().get_all("Proxy-Authenticate").collect();
    assert_eq!(challenges.len(), 1, "MD5 alone by default: {challenges:?}");
    assert!(challenges[0].contains("algorithm=MD5"));
}

#[test]
fn failed_registration_write_is_settled_by_reading_it_back() {
    let mut n = node(Config::default());
    send(&mut n, T0, B, REGISTER_BOB);
    let batch = n.poll_batch().unwrap();
    assert_eq!(batch.writes.len(), 1);
    // The store did not answer: the 200 was never sent, and the transaction is abandoned.
    fail(&mut n, T0 + 1, &batch);
    assert_eq!(
        n.transactions(),
        0,
        "the REGISTER's transaction is abandoned"
    );
    // Until the read-back says what the store holds, the bindings stay in use (a refresh
    // that failed must not lose the registration it refreshes).
    assert_eq!(n.registrations(), 1);
    // The store holds nothing: the binding was never durable, so it goes.
    n.handle_store_record(T0 + 2, "reg/bob", None);
    assert_eq!(n.registrations(), 0);
    send(&mut n, T0 + 2, A, INVITE);
    let mut store = BTreeMap::new();
    assert_eq!(
        lines(&run(&mut n, &mut store)),
        ["127.0.0.1:5061 404 Not Found"]
    );
    // A retransmission of the REGISTER is processed afresh (a new write), not answered
    // from the abandoned transaction's memory; this time the write happened after all.
    send(&mut n, T0 + 3, B, REGISTER_BOB);
    let again = n.poll_batch().unwrap();
    assert_eq!(again.writes.len(), 1);
    fail(&mut n, T0 + 4, &again);
    let record = again.writes[0].clone().into_record().expect("a put");
    n.handle_store_record(T0 + 5, "reg/bob", Some(record));
    assert_eq!(n.registrations(), 1);
    assert_eq!(n.metrics().store_failures, 2);
}

#[test]
fn failed_deregister_holds_back_its_200_and_the_binding_stays() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    register_bob(&mut n, &mut store);
    let deregister = REGISTER_BOB
        .replace("Expires: 600", "Expires: 0")
        .replace("CSeq: 1", "CSeq: 2")
        .replace("z9hG4bKr1", "z9hG4bKr2");
    send(&mut n, T0 + 5, B, &deregister);
    let batch = n.poll_batch().unwrap();
    assert!(matches!(&batch.writes[..], [StoreWrite::Delete { key, .. }] if key == "reg/bob"));
    assert_eq!(batch.transmits.len(), 1, "the 200");
    // The delete failed: the 200 would report a removal the store does not hold.
    assert!(
        batch.held_by(&batch.writes),
        "a failed de-REGISTER delete must hold back its 200"
    );
    let before = n.transactions();
    fail(&mut n, T0 + 6, &batch);
    assert_eq!(
        n.transactions(),
        before - 1,
        "abandoned, so a retransmission is handled afresh"
    );
    // The read-back finds the binding still stored: it is still bound.
    n.handle_store_record(T0 + 7, "reg/bob", store.get("reg/bob").cloned());
    assert_eq!(n.registrations(), 1);
    send(&mut n, T0 + 8, A, INVITE);
    assert_sent(
        &lines(&run(&mut n, &mut store)),
        "127.0.0.1:5062 INVITE sip:bob@127.0.0.1:5062",
    );
    // The phone retransmits its de-REGISTER; this time the delete is durable.
    send(&mut n, T0 + 9, B, &deregister);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5062 200 OK"]);
    assert!(!store.contains_key("reg/bob"));
    assert_eq!(n.registrations(), 0);
}

#[test]
fn a_calls_last_delete_does_not_hold_back_what_its_batch_sends() {
    let (mut n, mut store, _b_inv, ok) = acked_call();
    send(&mut n, T0 + 100, A, &from_a(&ok, "BYE", 2, "z9hG4bKa3"));
    let out = run(&mut n, &mut store);
    for (to, m) in &out {
        if let SipMessage::Request(r) = m {
            send(&mut n, T0 + 150, to, &ok_for(r));
        }
    }
    let batch = n.poll_batch().unwrap();
    // The record becomes a tombstone (it expires by itself), whose write holds nothing.
    assert!(matches!(
        &batch.writes[..],
        [StoreWrite::Put {
            expires_at: Some(_),
            ..
        }]
    ));
    assert!(!batch.held_by(&batch.writes));
}

#[test]
fn call_record_left_by_a_failed_write_is_deleted_once_read_back() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    let (_b_inv, ok) = confirmed_call(&mut n, &mut store);
    // The caller's BYE: the record becomes `Ending` and the callee gets our BYE.
    let bye = from_a(&ok, "BYE", 2, "z9hG4bKa3");
    send(&mut n, T0 + 100, A, &bye);
    let out = run(&mut n, &mut store);
    // The callee answers; the record's tombstone write fails.
    for (to, m) in &out {
        if let SipMessage::Request(r) = m {
            send(&mut n, T0 + 150, to, &ok_for(r));
        }
    }
    let batch = n.poll_batch().unwrap();
    let key = match &batch.writes[..] {
        [StoreWrite::Put { key, .. }] => key.clone(),
        other => panic!("expected one tombstone, got {other:?}"),
    };
    fail(&mut n, T0 + 160, &batch);
    assert_eq!(n.active_calls(), 0);
    // Read back: the record is still there, so the node deletes it again.
    let left = store.get(&key).cloned();
    let version = left.as_ref().map(|r| r.version).unwrap();
    n.handle_store_record(T0 + 200, &key, left);
    let retry = n.poll_batch().unwrap();
    assert_eq!(
        retry.writes,
        [StoreWrite::Delete {
            key: key.clone(),
            expect: version
        }]
    );
    // Nothing is left to do once the store holds nothing.
    n.handle_store_record(T0 + 300, &key, None);
    assert!(n.poll_batch().is_none());
}

/// The node dies after the caller's BYE was committed (the record says `Ending`) but
/// before the BYE to the callee (and the 200 to the caller) left: the restarted node sends
/// it, and the caller's BYE retransmission then gets 200, not 481 (found by the continuity
/// check: node-crash-during-ringing seed 848).
#[test]
fn bye_lost_with_a_dead_node_is_sent_by_the_restarted_one() {
    let (mut n, mut store, _b_inv, ok) = acked_call();
    let bye = from_a(&ok, "BYE", 2, "z9hG4bKa3");
    send(&mut n, T0 + 100, A, &bye);
    // The batch's writes are committed; the node dies before its transmits leave.
    let batch = n.poll_batch().unwrap();
    for w in batch.writes {
        commit(&mut store, w);
    }
    drop(n);
    let mut n = restarted(&store, 2, T0 + 5_000);
    let out = run(&mut n, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5062 BYE sip:bob@127.0.0.1:5062"]);
    answer_byes(&mut n, &mut store, &out, T0 + 5_100);
    assert_eq!(n.active_calls(), 0);
    // The 200 to the caller's BYE may have died with the node: the record is now a
    // tombstone that expires after 64·T1, not a call.
    let calls: Vec<&StoredRecord> = store
        .iter()
        .filter(|(k, _)| k.starts_with("call/"))
        .map(|(_, r)| r)
        .collect();
    assert_eq!(calls.len(), 1);
    let t1 = Config::default().timers.t1;
    assert_eq!(calls[0].expires_at, Some(T0 + 5_100 + 64 * t1));
    assert!(String::from_utf8_lossy(&calls[0].value).contains("\"ended\":true"));
    send(&mut n, T0 + 5_500, A, &bye);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5061 200 OK"]);
    // A node restarted once more has only the tombstone to go by: the BYE still gets 200.
    let mut n = restarted(&store, 3, T0 + 6_000);
    assert!(run(&mut n, &mut store).is_empty());
    send(&mut n, T0 + 6_100, A, &bye);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5061 200 OK"]);
    assert_eq!(n.active_calls(), 0);
}

#[test]
fn answer_whose_write_failed_becomes_500_for_the_caller_and_bye_for_the_callee() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    register_bob(&mut n, &mut store);
    send(&mut n, T0 + 10, A, INVITE);
    let out = run(&mut n, &mut store);
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!()
    };
    let ok = reply(&b_inv, "200 OK");
    send(&mut n, T0 + 30, B, &ok);
    let batch = n.poll_batch().unwrap();
    assert_eq!(batch.writes.len(), 1);
    fail(&mut n, T0 + 40, &batch);
    let out = run(&mut n, &mut store);
    assert_eq!(
        lines(&out),
        [
            "127.0.0.1:5062 ACK sip:bob@127.0.0.1:5062",
            "127.0.0.1:5062 BYE sip:bob@127.0.0.1:5062",
            "127.0.0.1:5061 500 Call State Not Saved",
        ]
    );
    assert_eq!(n.active_calls(), 0);
}

/// Timer C: a callee that rings for ever is cancelled and the caller gets 408.
#[test]
fn callee_ringing_past_timer_c_is_cancelled_and_the_caller_gets_408() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    register_bob(&mut n, &mut store);
    send(&mut n, T0 + 10, A, INVITE);
    let out = run(&mut n, &mut store);
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!()
    };
    let ringing = reply(&b_inv, "180 Ringing");
    send(&mut n, T0 + 20, B, &ringing);
    assert_eq!(
        lines(&run(&mut n, &mut store)),
        ["127.0.0.1:5061 180 Ringing"]
    );
    n.handle_timeout(T0 + 10 + 179_999);
    assert!(!lines(&run(&mut n, &mut store))
        .iter()
        .any(|l| l.contains("408") || l.contains("CANCEL")));
    n.handle_timeout(T0 + 10 + 180_000);
    let out = lines(&run(&mut n, &mut store));
    assert_sent(&out, "127.0.0.1:5061 408 Request Timeout");
    assert_sent(&out, "127.0.0.1:5062 CANCEL sip:bob@127.0.0.1:5062");
}

/// §15.1.2: a BYE ends the call while the callee's re-INVITE is still being relayed: the
/// re-INVITE gets 487, so that no transaction is left without a final response.
#[test]
fn bye_during_a_relayed_reinvite_answers_it_487() {
    let (mut n, mut store, b_inv, ok) = acked_call();
    let reinvite = from_b(&b_inv, "INVITE", 1, "z9hG4bKb1");
    send(&mut n, T0 + 50, B, &reinvite);
    let out = lines(&run(&mut n, &mut store));
    assert_eq!(out, ["127.0.0.1:5061 INVITE sip:alice@127.0.0.1:5061"]);
    let bye = from_a(&ok, "BYE", 2, "z9hG4bKa3");
    send(&mut n, T0 + 60, A, &bye);
    let out = lines(&run(&mut n, &mut store));
    assert_sent(&out, "127.0.0.1:5062 487 Request Terminated");
    assert_sent(&out, "127.0.0.1:5062 BYE sip:bob@127.0.0.1:5062");
    assert_sent(&out, "127.0.0.1:5061 200 OK");
}

/// The node dies after the callee's 2xx to a relayed re-INVITE was stored but before it
/// reached the caller (simulation: clock-skew seed 238). The restarted node lost the
/// caller's transaction; the caller's retransmitted re-INVITE is the request that 2xx
/// answers, not an out-of-order one: it gets the 2xx, never a 500 followed by the 2xx.
#[test]
fn retransmitted_reinvite_to_a_restarted_node_gets_the_stored_2xx() {
    let (mut n, mut store, _b_inv, ok) = acked_call();
    let reinvite = reinvite_from_a(&ok);
    let relayed = relayed_reinvite(&mut n, &mut store, &reinvite);
    send(&mut n, T0 + 60, B, &ok_for(&relayed));
    // The record with the pending 2xx is durable; the node dies before the 2xx leaves.
    let _lost = run(&mut n, &mut store);
    drop(n);
    let mut n = restarted(&store, 3, T0 + 900);
    let first = lines(&run(&mut n, &mut store));
    send(&mut n, T0 + 1_000, A, &reinvite);
    let mut out = first;
    out.extend(lines(&run(&mut n, &mut store)));
    assert!(
        !out.iter().any(|l| l.contains(" 500 ")),
        "a 500 for the request whose 2xx is stored: {out:?}"
    );
    assert_sent(&out, "127.0.0.1:5061 200 OK");
}

/// A call ends (BYE from the callee) while the caller has not yet ACKed the relayed 2xx
/// to its re-INVITE: the 2xx is still retransmitted until the ACK comes (§13.3.1.4).
#[test]
fn relayed_2xx_is_retransmitted_after_its_call_ended_until_the_ack() {
    let (mut n, mut store, b_inv, ok) = acked_call();
    let reinvite = reinvite_from_a(&ok);
    let relayed = relayed_reinvite(&mut n, &mut store, &reinvite);
    send(&mut n, T0 + 60, B, &ok_for(&relayed));
    assert!(lines(&run(&mut n, &mut store)).contains(&"127.0.0.1:5061 200 OK".to_string()));
    // The callee hangs up before the caller's ACK arrives.
    let bye = from_b(&b_inv, "BYE", 5, "z9hG4bKb9");
    send(&mut n, T0 + 70, B, &bye);
    run(&mut n, &mut store);
    n.handle_timeout(T0 + 60 + 500);
    assert!(lines(&run(&mut n, &mut store)).contains(&"127.0.0.1:5061 200 OK".to_string()));
    let ack2 = ack_from_a(&ok)
        .replace("CSeq: 1 ACK", "CSeq: 2 ACK")
        .replace("z9hG4bKa2", "z9hG4bKa4");
    send(&mut n, T0 + 700, A, &ack2);
    n.handle_timeout(T0 + 60 + 1_500);
    let left = lines(&run(&mut n, &mut store));
    assert!(
        !left.iter().any(|l| l.contains("200 OK")),
        "no retransmission after the ACK: {left:?}"
    );
}

/// A party that never answers our BYE does not keep the call stored: once the BYE times
/// out (Timer F), the record goes.
#[test]
fn unanswered_bye_times_out_and_the_record_goes() {
    let (mut n, mut store, _b_inv, ok) = acked_call();
    let bye = from_a(&ok, "BYE", 2, "z9hG4bKa3");
    send(&mut n, T0 + 100, A, &bye);
    run(&mut n, &mut store);
    assert!(store.keys().any(|k| k.starts_with("call/")));
    while let Some(at) = n.poll_timeout().filter(|t| *t <= T0 + 40_000) {
        n.handle_timeout(at);
        run(&mut n, &mut store);
    }
    assert_eq!(n.active_calls(), 0);
    assert_eq!(calls_left(&store), 0);
}

/// An ACK is never answered, however broken (here its To has an empty tag): found by the
/// simulation (chaos seed 424), where a 400 to an ACK was a message the peer could only
/// drop.
#[test]
fn malformed_ack_gets_no_response() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    let ack =
        "ACK sip:drongo@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx1\n\
               Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:bob@127.0.0.1>;tag=\n\
               Call-ID: nope\nCSeq: 1 ACK\nContent-Length: 0\n\n";
    send(&mut n, T0, A, ack);
    assert!(run(&mut n, &mut store).is_empty());
    // The same request as an OPTIONS is answered 400.
    send(&mut n, T0, A, &ack.replace("ACK", "OPTIONS"));
    assert_eq!(lines(&run(&mut n, &mut store)).len(), 1);
}

/// §9.2: a CANCEL that arrives after the INVITE was answered matches its transaction, so
/// it gets 200, and changes nothing.
#[test]
fn cancel_after_the_answer_gets_200_and_changes_nothing() {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    confirmed_call(&mut n, &mut store);
    let cancel = of_invite("CANCEL");
    send(&mut n, T0 + 50, A, &cancel);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5061 200 OK"]);
    assert_eq!(n.active_calls(), 1);
}

/// As above, and the node restarts before the caller's ACK: the restarted node goes on
/// retransmitting the 2xx its tombstone says the call owed, and answers a retransmitted
/// re-INVITE with it, not 481.
#[test]
fn a_restarted_node_still_owes_the_2xx_of_a_reinvite_whose_call_ended() {
    let (mut n, mut store, b_inv, ok) = acked_call();
    let reinvite = reinvite_from_a(&ok);
    let relayed = relayed_reinvite(&mut n, &mut store, &reinvite);
    send(&mut n, T0 + 60, B, &ok_for(&relayed));
    run(&mut n, &mut store);
    send(&mut n, T0 + 70, B, &from_b(&b_inv, "BYE", 5, "z9hG4bKb9"));
    let out = run(&mut n, &mut store);
    answer_byes(&mut n, &mut store, &out, T0 + 80);
    assert_eq!(calls_left(&store), 0, "the call is over");
    drop(n);
    let mut n = restarted(&store, 4, T0 + 900);
    run(&mut n, &mut store);
    n.handle_timeout(T0 + 2_100);
    assert_sent(&lines(&run(&mut n, &mut store)), "127.0.0.1:5061 200 OK");
    send(&mut n, T0 + 2_200, A, &reinvite);
    assert_eq!(lines(&run(&mut n, &mut store)), ["127.0.0.1:5061 200 OK"]);
}
