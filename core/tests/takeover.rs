//! Any member serves any call: an in-dialog request that reaches a node which does not
//! hold its call is served after the call is loaded from the store, and taken over when
//! its owner is no longer a live member (the claim is a compare-and-swap that goes with
//! the answer). The owner alive: the request is held, forwarded to the owner when it may
//! be, and answered with the owner's answer (`forwarding.rs`). No record: 481.

mod common;
use common::cluster::*;
use common::*;

#[test]
fn callers_bye_on_a_survivor_is_served_after_takeover() {
    let (mut store, call_key, _b_inv, ok) = call_on_node_1();
    // Node 1 is dead: node 2 is the only member left.
    let mut n2 = member(2, 5070, &[(2, 1)]);
    let bye = from_a(&ok, "BYE", 2, "z9hG4bKbye");
    send(&mut n2, T0 + 5_000, A, &bye);
    assert!(
        run(&mut n2, &mut store).is_empty(),
        "nothing before the call is loaded"
    );
    // call/callA (absent: the caller's Call-ID is the A-leg's), leg/callA, call/{id}.
    assert_eq!(load_all(&mut n2, &store, T0 + 5_010).len(), 3);
    // The claim (owner 2) is written with what the BYE causes.
    let out = run(&mut n2, &mut store);
    let l = lines(&out);
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5062 BYE")),
        "the callee gets its BYE: {l:?}"
    );
    assert_eq!(n2.metrics().takeovers, 1);
    if store.contains_key(&call_key) {
        assert_eq!(owner(&store, &call_key)[0], 2);
    }
    let out = answer_byes(&mut n2, &mut store, &out, T0 + 5_100);
    let all: Vec<String> = l.into_iter().chain(lines(&out)).collect();
    assert!(
        all.iter().any(|x| x == "127.0.0.1:5061 200 OK"),
        "the caller's BYE is answered 200: {all:?}"
    );
    assert_eq!(calls_left(&store), 0, "the call is over");
    // Its record and A-leg index are a tombstone for 64·T1: the caller's BYE, sent again
    // to any member after a lost 200, is answered 200 there too.
    let expiring = |k: &str| store.get(k).is_some_and(|r| r.expires_at.is_some());
    assert!(expiring(&call_key) && expiring("leg/callA"), "{store:?}");
    let mut n3 = member(3, 5080, &[(2, 1), (3, 1)]);
    send(&mut n3, T0 + 6_000, A, &bye);
    assert!(run(&mut n3, &mut store).is_empty());
    load_all(&mut n3, &store, T0 + 6_010);
    assert_eq!(lines(&run(&mut n3, &mut store)), ["127.0.0.1:5061 200 OK"]);
}

#[test]
fn callees_request_finds_the_call_by_its_own_call_id() {
    let (mut store, call_key, b_inv, _ok) = call_on_node_1();
    let mut n2 = member(2, 5070, &[(2, 1)]);
    // The callee's BYE carries the B-leg's Call-ID, which names the call.
    let bye = from_b(&b_inv, "BYE", 1, "z9hG4bKbb");
    send(&mut n2, T0 + 5_000, B, &bye);
    assert_eq!(load_all(&mut n2, &store, T0 + 5_010).len(), 1);
    let out = run(&mut n2, &mut store);
    let l = lines(&out);
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5061 BYE")),
        "{l:?}"
    );
    assert_eq!(owner(&store, &call_key)[0], 2);
}

/// A balancer that read the store saw the owner's lease end before this node's list did:
/// the request is held, and served once the owner leaves the list too.
#[test]
fn a_request_held_for_a_live_owner_is_served_when_the_owner_leaves() {
    let (mut store, call_key, _b, ok) = call_on_node_1();
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    send(&mut n2, T0 + 5_000, A, &from_a(&ok, "INFO", 2, "z9hG4bKi"));
    load_all(&mut n2, &store, T0 + 5_010);
    assert!(lines(&run(&mut n2, &mut store)).is_empty());
    n2.handle_members(T0 + 5_300, 1, &[(2, 1)], &[]);
    load_all(&mut n2, &store, T0 + 5_310);
    let l = lines(&run(&mut n2, &mut store));
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5062 INFO")),
        "relayed: {l:?}"
    );
    assert_eq!(owner(&store, &call_key)[0], 2);
}

#[test]
fn a_live_owners_call_is_not_taken_and_an_unknown_one_is_481() {
    let (mut store, call_key, _b, ok) = call_on_node_1();
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    send(&mut n2, T0 + 5_000, A, &from_a(&ok, "INFO", 2, "z9hG4bKi"));
    load_all(&mut n2, &store, T0 + 5_010);
    let l = lines(&run(&mut n2, &mut store));
    assert!(l.is_empty(), "held: our list may be late: {l:?}");
    let l = lines(&held_until_ttl(&mut n2, &mut store, T0 + 5_010));
    assert!(
        l.is_empty(),
        "no second answer to what the owner answers: {l:?}"
    );
    assert_eq!(
        owner(&store, &call_key),
        serde_json::json!([1, 1]),
        "untouched"
    );
    assert_eq!(n2.metrics().takeovers, 0);

    let unknown = from_a(&ok, "INFO", 3, "z9hG4bKu").replace("callA", "nosuchcall");
    send(&mut n2, T0 + 6_000, A, &unknown);
    assert_eq!(load_all(&mut n2, &store, T0 + 6_010).len(), 2);
    let l = lines(&run(&mut n2, &mut store));
    assert_eq!(l, ["127.0.0.1:5061 481 Call/Transaction Does Not Exist"]);
}

#[test]
fn a_single_node_answers_481_without_reading() {
    let (mut store, _k, _b, ok) = call_on_node_1();
    let mut n = node(Config::default());
    send(&mut n, T0 + 5_000, A, &from_a(&ok, "BYE", 2, "z9hG4bKs"));
    assert_eq!(n.poll_load(), None);
    let l = lines(&run(&mut n, &mut store));
    assert_eq!(l, ["127.0.0.1:5061 481 Call/Transaction Does Not Exist"]);
}

#[test]
fn an_adopted_call_is_written_as_the_new_owners_on_the_version_read() {
    let (mut store, call_key, _b, ok) = call_on_node_1();
    let version = store[&call_key].version;
    let mut n2 = member(2, 5070, &[(2, 1)]);
    send(&mut n2, T0 + 5_000, A, &from_a(&ok, "INFO", 2, "z9hG4bKi2"));
    load_all(&mut n2, &store, T0 + 5_010);
    let l = lines(&run(&mut n2, &mut store));
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5062 INFO")),
        "relayed: {l:?}"
    );
    // The claim: owner 2, written on the version read (a compare-and-swap: `commit`
    // asserts the expectation), before the relay's own write.
    assert_eq!(owner(&store, &call_key), serde_json::json!([2, 1]));
    assert_eq!(store[&call_key].version, version + 2);
}

#[test]
fn a_node_that_lost_its_lease_forgets_its_calls_and_takes_back_only_its_own() {
    // Node 1 runs a call; its lease runs out and it joins again as incarnation 2.
    let (mut store, call_key, _b_inv, ok, mut n1) = call_and_node_1();
    assert_eq!(n1.active_calls(), 1);
    n1.handle_input(
        T0 + 5_000,
        Input::Members {
            incarnation: 2,
            members: vec![(1, 2), (2, 1)],
            draining: vec![],
            addresses: vec![],
        },
    );
    assert_eq!(n1.active_calls(), 0, "forgotten at once");
    assert!(run(&mut n1, &mut store).is_empty(), "without a word");
    // Nobody took it: node 1 takes it back as incarnation 2.
    assert_eq!(load_all(&mut n1, &store, T0 + 5_010).len(), 1);
    run(&mut n1, &mut store);
    assert_eq!(n1.active_calls(), 1);
    assert_eq!(owner(&store, &call_key), serde_json::json!([1, 2]));

    // Again, but node 2 took the call over meanwhile: node 1 leaves it alone.
    let mut n2 = member(2, 5070, &[(2, 1)]);
    send(&mut n2, T0 + 6_000, A, &from_a(&ok, "INFO", 2, "z9hG4bKt"));
    load_all(&mut n2, &store, T0 + 6_010);
    run(&mut n2, &mut store);
    assert_eq!(owner(&store, &call_key)[0], 2);
    n1.handle_input(
        T0 + 7_000,
        Input::Members {
            incarnation: 3,
            members: vec![(1, 3), (2, 1)],
            draining: vec![],
            addresses: vec![],
        },
    );
    load_all(&mut n1, &store, T0 + 7_010);
    assert!(run(&mut n1, &mut store).is_empty());
    assert_eq!(n1.active_calls(), 0, "node 2's now");
    assert_eq!(owner(&store, &call_key)[0], 2);
}

/// Node 1 of a cluster of three sets up `n` calls (Call-IDs call0..), each ACKed.
fn calls_on_node_1(n: usize, cfg: Config) -> Store {
    let all = [(1, 1), (2, 1), (3, 1)];
    let mut n1 = Node::new(cfg, "127.0.0.1:5060".parse().unwrap(), 1, 101);
    n1.handle_members(T0, 1, &all, &[]);
    let mut store = Store::new();
    register_bob(&mut n1, &mut store);
    for i in 0..n {
        numbered_call(&mut n1, &mut store, i);
    }
    assert_eq!(n1.active_calls(), n);
    store
}

/// Node 1 leaves the list of `n`: it scans what it is told to and loads what it asks for.
fn sees_node_1_leave(n: &mut Node, store: &mut Store, now: u64) {
    n.handle_members(now, 1, &[(2, 1), (3, 1)], &[]);
    scan_all(n, store, now);
    load_all(n, store, now);
    run(n, store);
}

#[test]
fn a_dead_members_calls_are_spread_over_the_survivors_and_each_adopted_once() {
    let mut store = calls_on_node_1(12, Config::default());
    assert_eq!(scan(&store, "owns/1/").len(), 12, "the owner index");
    let all = [(1, 1), (2, 1), (3, 1)];
    let mut n2 = member(2, 5070, &all);
    let mut n3 = member(3, 5080, &all);
    sees_node_1_leave(&mut n2, &mut store, T0 + 5_000);
    sees_node_1_leave(&mut n3, &mut store, T0 + 5_000);
    let (a2, a3) = (n2.active_calls(), n3.active_calls());
    assert_eq!(a2 + a3, 12, "every call adopted once");
    assert!(a2 > 0 && a3 > 0, "spread: {a2} and {a3}");
    assert!(
        scan(&store, "owns/1/").is_empty(),
        "the index moved with the calls"
    );
    assert_eq!(scan(&store, "owns/2/").len(), a2);
    assert_eq!(scan(&store, "owns/3/").len(), a3);
    assert_eq!(n2.metrics().takeovers + n3.metrics().takeovers, 12);
    // Each takeover timed from the last list that had node 1 (T0) to the adoption.
    let h = (&n2.metrics().failover_ms, &n3.metrics().failover_ms);
    assert_eq!(h.0.count() + h.1.count(), 12);
    assert_eq!(h.0.sum + h.1.sum, 12 * 5_000);
}

/// Node 1 leaves the list while node 3 drains: node 3 adopts nothing (it is about to stop),
/// whether the list says so yet or it only knows it drains itself, and node 2 takes all.
#[test]
fn a_draining_member_adopts_nothing() {
    let mut store = calls_on_node_1(12, Config::default());
    let all = [(1, 1), (2, 1), (3, 1)];
    let mut n2 = member(2, 5070, &all);
    let mut n3 = member(3, 5080, &all);
    n3.drain();
    for n in [&mut n2, &mut n3] {
        n.handle_members(T0 + 5_000, 1, &[(2, 1), (3, 1)], &[3]);
        scan_all(n, &store, T0 + 5_000);
        load_all(n, &store, T0 + 5_000);
        run(n, &mut store);
    }
    assert_eq!((n2.active_calls(), n3.active_calls()), (12, 0));
}

/// Node 1 dies and node 3, the adopter of some of its calls, dies before it loads them:
/// those calls wait unadopted (node 2 scanned node 1's index while node 3 lived, and node
/// 3's own index holds none of them). Only the leader's sweep takes them, once node 1 has
/// been gone three lease TTLs, its claims fenced by its term; a member that does not lead
/// leaves them alone.
#[test]
fn the_leader_sweeps_up_calls_nobody_adopted() {
    let mut store = calls_on_node_1(12, Config::default());
    let all = [(1, 1), (2, 1), (3, 1)];
    let mut n2 = member(2, 5070, &all);
    sees_node_1_leave(&mut n2, &mut store, T0 + 5_000);
    let adopted = n2.active_calls();
    assert!(adopted < 12, "node 3's share is left: {adopted}");
    n2.handle_members(T0 + 6_000, 1, &[(2, 1)], &[]);
    scan_all(&mut n2, &store, T0 + 6_000);
    load_all(&mut n2, &store, T0 + 6_000);
    run(&mut n2, &mut store);
    assert_eq!(n2.active_calls(), adopted, "nobody adopts node 3's share");
    let sweep = |n: &mut Node, store: &mut Store, now: u64| {
        n.handle_input(now, Input::Sweep(scan(store, "call/")));
        load_all(n, store, now);
        run(n, store);
    };
    sweep(&mut n2, &mut store, T0 + 40_000);
    assert_eq!(n2.active_calls(), adopted, "not the leader: no chore");
    n2.handle_input(T0 + 40_000, Input::Leader { term: Some(4) });
    n2.handle_input(T0 + 40_000, Input::Sweep(scan(&store, "call/")));
    load_all(&mut n2, &store, T0 + 40_000);
    let (_, written) = run_noting(&mut n2, &mut store);
    assert_eq!(n2.active_calls(), 12, "the leader took the rest");
    // Its claims are its chore, fenced by its term.
    let claims: Vec<_> = written
        .iter()
        .filter(|(k, _)| k.starts_with("call/"))
        .collect();
    assert_eq!(claims.len(), 12 - adopted, "{written:?}");
    assert!(claims.iter().all(|(_, f)| *f == Some(4)), "{written:?}");
    assert_eq!(n2.metrics().orphans_adopted, (12 - adopted) as u64);
    assert!(scan(&store, "owns/1/").is_empty());
}

/// Hot standby: each survivor holds the records of the calls it would adopt (fed by the
/// store watch), so when node 1 leaves they take its calls over without reading the store;
/// a record one of them does not stand by for is not kept.
#[test]
fn hot_standbys_take_over_without_reading_the_store() {
    let mut store = calls_on_node_1(12, Config::default());
    let cfg = Config {
        cluster: drongo_core::config::ClusterConfig {
            strategy: drongo_core::config::Strategy::HotStandby,
            ..Default::default()
        },
        ..Config::default()
    };
    let all = [(1, 1), (2, 1), (3, 1)];
    let mut standbys = Vec::new();
    for (id, port) in [(2, 5070), (3, 5080)] {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut n = Node::new(cfg.clone(), addr, id, 100 + u64::from(id));
        n.handle_members(T0, 1, &all, &[]);
        watch_calls(&mut n, &store, T0 + 100);
        standbys.push(n);
    }
    let held: usize = standbys.iter().map(Node::standby_calls).sum();
    assert_eq!(held, 12, "each call has one standby");
    let mut reads = 0;
    for n in &mut standbys {
        n.handle_members(T0 + 5_000, 1, &[(2, 1), (3, 1)], &[]);
        scan_all(n, &store, T0 + 5_000);
        reads += load_all(n, &store, T0 + 5_000).len();
        run(n, &mut store);
    }
    assert_eq!(reads, 0, "no call read from the store");
    let active: usize = standbys.iter().map(Node::active_calls).sum();
    let from_copy: u64 = standbys.iter().map(|n| n.metrics().standby_takeovers).sum();
    assert_eq!((active, from_copy), (12, 12));
    assert!(scan(&store, "owns/1/").is_empty());
}

#[test]
fn an_adopted_call_nobody_speaks_on_ends_at_its_maximum_duration() {
    let cfg = Config {
        max_call_duration_secs: 60,
        ..Config::default()
    };
    let mut store = calls_on_node_1(1, cfg);
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    n2.handle_members(T0 + 5_000, 1, &[(2, 1)], &[]);
    let prefix = n2.poll_scan().expect("node 1's owner index");
    let records = scan(&store, &prefix);
    n2.handle_scanned(T0 + 5_000, &prefix, Some(records));
    load_all(&mut n2, &store, T0 + 5_000);
    run(&mut n2, &mut store);
    assert_eq!(n2.active_calls(), 1, "adopted though nobody spoke");
    assert!(n2.poll_timeout().is_some_and(|t| t <= T0 + 20 + 60_000));
    n2.handle_timeout(T0 + 20 + 60_000);
    let l = lines(&run(&mut n2, &mut store));
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5061 BYE")),
        "{l:?}"
    );
    assert!(
        l.iter().any(|x| x.starts_with("127.0.0.1:5062 BYE")),
        "{l:?}"
    );
}

/// `[cluster] strategy = "none"`: calls are not written at all (registrations are), and a
/// member that does not hold a call answers its requests 481 without reading the store.
#[test]
fn with_strategy_none_calls_stay_in_memory_and_another_member_answers_481() {
    let mut cfg = Config::default();
    cfg.cluster.strategy = drongo_core::config::Strategy::None;
    let store = calls_on_node_1(2, cfg.clone());
    assert!(store.keys().any(|k| k.starts_with("reg/")), "{store:?}");
    assert!(
        store
            .keys()
            .all(|k| !k.starts_with("call/") && !k.starts_with("leg/")),
        "no call state written: {store:?}"
    );
    let mut n2 = Node::new(cfg, "127.0.0.1:5070".parse().unwrap(), 2, 102);
    n2.handle_members(T0, 1, &[(2, 1), (3, 1)], &[]);
    let bye = "BYE sip:drongo@127.0.0.1:5070 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKb0\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=a\nTo: <sip:bob@127.0.0.1>;tag=x\nCall-ID: call0\nCSeq: 2 BYE\nContent-Length: 0\n\n";
    send(&mut n2, T0 + 5_000, A, bye);
    let mut store = store;
    assert_eq!(
        lines(&run(&mut n2, &mut store)),
        ["127.0.0.1:5061 481 Call/Transaction Does Not Exist"]
    );
    assert_eq!(n2.poll_load(), None, "nothing read");
    assert_eq!(n2.poll_scan(), None);
}

/// Requests on both legs of one call can wait for the same record at once (the caller's
/// through the A-leg index, the callee's directly): one read answers both, and each is
/// dealt with (here the owner lives: both are held a TTL, then let go). Found by the
/// rolling-restart scenario, seed 292: the second wait replaced the first, whose request
/// was never dealt with again.
#[test]
fn requests_on_both_legs_waiting_for_one_record_are_all_let_go() {
    let (mut store, call_key, b_inv, ok) = call_on_node_1();
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    send(&mut n2, T0 + 5_000, A, &from_a(&ok, "INFO", 2, "z9hG4bKia"));
    // The caller's lookups (call/callA, then leg/callA) until it waits for the call itself.
    let answer = |n: &mut Node, key: String| {
        let record = Some(store.get(&key).cloned());
        n.handle_input(T0 + 5_010, Input::Loaded { key, record });
    };
    loop {
        let key = n2.poll_load().expect("a read");
        if key == call_key {
            break;
        }
        answer(&mut n2, key);
    }
    send(
        &mut n2,
        T0 + 5_020,
        B,
        &from_b(&b_inv, "INFO", 1, "z9hG4bKib"),
    );
    assert_eq!(
        n2.poll_load(),
        None,
        "the callee's request waits on the same read"
    );
    answer(&mut n2, call_key.clone());
    run(&mut n2, &mut store);
    let l = lines(&held_until_ttl(&mut n2, &mut store, T0 + 5_010));
    assert!(l.is_empty(), "{l:?}");
    assert_eq!(n2.transactions(), 0, "both let go");
}

/// A member that started again claims each of its calls for its new incarnation before it
/// runs them (a compare-and-swap: a survivor may be adopting the same call), and a member
/// whose list does not have it yet takes the claim's newer incarnation as a sign of life:
/// the request is held (then let go), the call stays the restarted member's. Found by the
/// store-leader-change-during-takeover scenario, seeds 205 and 184 (both ran the call).
#[test]
fn a_restarted_member_claims_its_calls_and_a_stale_list_does_not_take_them() {
    let (mut store, call_key, _b, ok) = call_on_node_1();
    let mut n1 = Node::new(Config::default(), "127.0.0.1:5060".parse().unwrap(), 1, 201);
    n1.handle_members(T0 + 3_000, 2, &[(1, 2), (2, 1)], &[]);
    let records: Vec<StoredRecord> = store.values().cloned().collect();
    n1.restore(&records, T0 + 3_000);
    run(&mut n1, &mut store);
    assert_eq!(
        owner(&store, &call_key),
        serde_json::json!([1, 2]),
        "claimed"
    );
    // Node 2 last saw node 1's first incarnation, and its list has not caught up yet.
    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    n2.handle_members(T0 + 3_100, 1, &[(2, 1)], &[]);
    scan_all(&mut n2, &store, T0 + 3_100);
    send(&mut n2, T0 + 3_200, A, &from_a(&ok, "INFO", 2, "z9hG4bKi"));
    load_all(&mut n2, &store, T0 + 3_210);
    run(&mut n2, &mut store);
    let l = lines(&held_until_ttl(&mut n2, &mut store, T0 + 3_210));
    assert!(l.is_empty(), "{l:?}");
    assert_eq!(
        owner(&store, &call_key),
        serde_json::json!([1, 2]),
        "untouched"
    );
    assert_eq!(n2.active_calls(), 0);
}

/// The caller's re-INVITE was answered 2xx, and the call ended (the callee's BYE) before
/// the caller's ACK: node 1 goes on retransmitting that 2xx. A retransmission of the
/// re-INVITE that reaches another member (simulation: store-leader-change-during-takeover
/// seed 616) finds the tombstone, and gets the same 2xx: a 481 there would be a second,
/// different final response to one INVITE.
#[test]
fn a_reinvite_answered_before_its_call_ended_gets_its_2xx_from_any_member() {
    let (mut store, call_key, b_inv, ok, mut n1) = call_and_node_1();
    let reinvite = reinvite_from_a(&ok);
    let relayed = relayed_reinvite(&mut n1, &mut store, &reinvite);
    send(&mut n1, T0 + 60, B, &ok_for(&relayed));
    assert_sent(&lines(&run(&mut n1, &mut store)), "127.0.0.1:5061 200 OK");
    send(&mut n1, T0 + 70, B, &from_b(&b_inv, "BYE", 5, "z9hG4bKb9"));
    let out = run(&mut n1, &mut store);
    answer_byes(&mut n1, &mut store, &out, T0 + 80);
    assert_eq!(calls_left(&store), 0, "the call is over");
    assert!(store[&call_key].expires_at.is_some(), "a tombstone");

    let mut n2 = member(2, 5070, &[(1, 1), (2, 1)]);
    send(&mut n2, T0 + 1_000, A, &reinvite);
    load_all(&mut n2, &store, T0 + 1_010);
    assert_eq!(lines(&run(&mut n2, &mut store)), ["127.0.0.1:5061 200 OK"]);
    // Another copy of the re-INVITE (a phone's failover copy: a new branch) gets the 2xx
    // with its own Via (cluster-chaos seed 297: the first copy's Via went out).
    let copy = reinvite.replace("z9hG4bKa3", "z9hG4bKa3copy");
    send(&mut n2, T0 + 1_050, A, &copy);
    load_all(&mut n2, &store, T0 + 1_060);
    let out = run(&mut n2, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5061 200 OK"]);
    let (_, SipMessage::Response(r)) = &out[0] else {
        panic!()
    };
    assert!(
        r.headers
            .get("Via")
            .is_some_and(|v| v.contains("z9hG4bKa3copy")),
        "{:?}",
        r.headers.get("Via")
    );
    // Any other request in the ended dialogs is 481 there.
    send(&mut n2, T0 + 1_100, A, &from_a(&ok, "INFO", 3, "z9hG4bKi3"));
    load_all(&mut n2, &store, T0 + 1_110);
    assert_eq!(
        lines(&run(&mut n2, &mut store)),
        ["127.0.0.1:5061 481 Call/Transaction Does Not Exist"]
    );
}
