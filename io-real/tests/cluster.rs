//! Cluster membership with real `drongo` processes on the 3-member etcd of `ci/etcd.sh`
//! (`DRONGO_ETCD_ENDPOINTS`, set by `ci/test.sh`): joining, refusing a second process with
//! a live member's id, a killed member leaving the list once its lease runs out, a new
//! incarnation on every start, a stopped (SIGSTOP) member losing its lease and joining
//! again, a drained member leaving at once, and `drongo cluster status`; and a call that
//! outlives its node: set up through node 1, node 1 killed, the caller's BYE sent to node 2
//! (SIPp `setdest`) is answered 200 and the callee gets its BYE; leader election: one
//! leader, another with a larger term within a TTL of a `kill -9`, a stopped leader that
//! does not act as one after `SIGCONT`, and whose term the store refuses from then on.
#![cfg(feature = "etcd")]

mod common;

use common::{register, sipp, Drongo, SECS};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TTL_MS: u64 = 1_000;

/// The store of the test whose member ids start at `base` (a multiple of 5).
fn store_url(base: u16) -> String {
    common::etcd_url(&format!("cluster-{base}"))
}

fn config() -> String {
    format!("[cluster]\nlease_ttl_ms = {TTL_MS}\n[timers]\nt1 = 100\nt2 = 4000\nt4 = 5000\n")
}

fn member(sip: u16, id: u16) -> Drongo {
    let url = store_url(id - id % 5);
    let id = id.to_string();
    Drongo::start_with(sip, &config(), &["--store", &url, "--node-id", &id])
}

/// `/cluster` of `d`, parsed.
fn cluster(d: &Drongo) -> serde_json::Value {
    let text = d.http("/cluster").expect("/cluster answers 200");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The ids of the members `d` sees among this test's (`base` to `base + 4`: the tests
/// share the etcd cluster and run at once), sorted.
fn seen(d: &Drongo, base: u16) -> Vec<u64> {
    let ours = u64::from(base)..u64::from(base) + 5;
    let mut ids: Vec<u64> = cluster(d)["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_u64()).collect())
        .unwrap_or_default();
    ids.retain(|id| ours.contains(id));
    ids.sort_unstable();
    ids
}

fn incarnation(d: &Drongo) -> u64 {
    cluster(d)["incarnation"].as_u64().unwrap_or(0)
}

/// Waits up to `limit` for `f`; the time it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

#[test]
fn membership_lease_fence_and_rejoin() {
    // Ids of this run only: the etcd cluster outlives test runs.
    let a = 20_000 + (std::process::id() % 2_000) as u16 * 5;
    let b = a + 1;
    let mut n1 = member(5370, a);
    let first = incarnation(&n1);
    assert!(first >= 1);
    assert_eq!(cluster(&n1)["lease_holds"], true);

    // A second process with a live member's id refuses to start.
    let dup_dir = n1.dir.join("dup");
    std::fs::create_dir_all(&dup_dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drongo"))
        .args([
            "run",
            "--sip",
            "127.0.0.1:5372",
            "--admin",
            "127.0.0.1:6372",
        ])
        .arg("--data")
        .arg(&dup_dir)
        .args(["--store", &store_url(a), "--node-id", &a.to_string()])
        .stdout(Stdio::null())
        .output()
        .expect("drongo binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second member {a} started: {err}");
    assert!(err.contains("is held by a live member"), "{err}");

    // Both members see each other.
    let mut n2 = member(5374, b);
    let both = vec![u64::from(a), u64::from(b)];
    assert!(within(Duration::from_secs(3), || seen(&n1, a) == both).is_some());
    assert_eq!(seen(&n2, a), both);
    let status = Command::new(env!("CARGO_BIN_EXE_drongo"))
        .args(["cluster", "status", "--store", &store_url(a)])
        .output()
        .expect("drongo cluster status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{a} "))) && text.contains("127.0.0.1:5374"),
        "{text}"
    );

    // kill -9: gone from the others' view once its lease has run out.
    n1.kill9();
    let gone = within(Duration::from_millis(TTL_MS * 3), || {
        seen(&n2, a) == vec![u64::from(b)]
    });
    let gone = gone.expect("a killed member leaves the list");
    println!("killed member gone from the list after {gone:?} (TTL {TTL_MS} ms)");

    // Started again: a new incarnation.
    n1.spawn();
    assert_eq!(incarnation(&n1), first + 1);
    assert!(within(Duration::from_secs(3), || seen(&n2, a) == both).is_some());

    // SIGSTOP past the lease: the others see it gone; on SIGCONT it finds its lease lost,
    // and joins again with the next incarnation.
    n1.signal("-STOP");
    std::thread::sleep(Duration::from_millis(TTL_MS));
    let paused = within(Duration::from_millis(TTL_MS * 3), || {
        seen(&n2, a) == vec![u64::from(b)]
    });
    n1.signal("-CONT");
    assert!(paused.is_some(), "a stopped member leaves the list");
    let rejoined = within(Duration::from_secs(5), || {
        n1.metric("drongo_lease_losses_total") == 1 && incarnation(&n1) == first + 2
    });
    assert!(rejoined.is_some(), "{}", n1.log());
    assert!(n1.log().contains("lease lost"));
    assert!(within(Duration::from_secs(3), || seen(&n2, a) == both).is_some());

    // A drained member deletes its record: gone at once, not after its lease.
    n2.signal("-TERM");
    assert!(n2.exit_within(Duration::from_secs(10)).is_some());
    let left = within(Duration::from_millis(TTL_MS * 7 / 10), || {
        seen(&n1, a) == vec![u64::from(a)]
    });
    // n1 refreshes its view every third of the TTL; the lease alone would take a TTL.
    assert!(left.is_some(), "a drained member leaves at once");
}

#[test]
fn callers_bye_reaches_a_survivor_after_kill_9() {
    let a = 22_000 + (std::process::id() % 2_000) as u16 * 5;
    let b = a + 1;
    let mut n1 = member(5380, a);
    let n2 = member(5384, b);
    let both = vec![u64::from(a), u64::from(b)];
    assert!(within(Duration::from_secs(3), || seen(&n2, a) == both).is_some());
    register(&n1, "bob", 5386);
    let callee = sipp(&n1.dir, "uas", 5386, None, &[]);
    std::thread::sleep(Duration::from_millis(200));
    // The caller's scenario, with its BYE sent to node 2 (the 200's Contact names node 1).
    let uac = std::fs::read_to_string(common::scenario("uac")).unwrap();
    let setdest = format!(
        "<pause/>\n  <nop><action><setdest host=\"127.0.0.1\" port=\"{}\" protocol=\"udp\"/></action></nop>",
        n2.sip
    );
    let path = n1.dir.join("uac_failover.xml");
    std::fs::write(&path, uac.replace("<pause/>", &setdest)).unwrap();
    let caller = sipp(
        &n1.dir,
        path.to_str().unwrap(),
        5388,
        Some(n1.sip),
        &["-s", "bob", "-d", "4000"],
    );
    let answered = within(SECS, || n1.metric("drongo_calls_answered_total") == 1);
    assert!(answered.is_some(), "call not answered\n{}", n1.log());
    std::thread::sleep(Duration::from_millis(300));
    // `/cluster` says node 1 runs the call; `drongo cluster status` that it owns it.
    assert_eq!(cluster(&n1)["calls"], 1);
    let status = Command::new(env!("CARGO_BIN_EXE_drongo"))
        .args(["cluster", "status", "--store", &store_url(a)])
        .output()
        .expect("drongo cluster status");
    let text = String::from_utf8_lossy(&status.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{a} ")))
        .unwrap_or_default();
    assert_eq!(row.split_whitespace().last(), Some("1"), "{text}");
    n1.kill9();
    let log1 = n1.log();
    assert!(
        caller.succeeded(SECS),
        "caller's BYE to node 2\n{}",
        n2.log()
    );
    assert!(
        callee.succeeded(SECS),
        "callee's BYE from node 2\n{}",
        n2.log()
    );
    assert_eq!(
        n2.metric("drongo_takeovers_total"),
        1,
        "{}\n{log1}",
        n2.log()
    );
    assert_eq!(n2.metric("drongo_failover_duration_ms_count"), 1);
    println!(
        "failover: {} ms from the last list with node 1 to the takeover",
        n2.metric("drongo_failover_duration_ms_sum")
    );
    // SIPp answers the BYE towards the address the call came from (node 1, dead), not
    // the Via (§18.2.2): node 2's BYE transaction times out (64·T1 = 6.4 s here), which
    // ends the call all the same.
    let over = within(Duration::from_secs(10), || {
        n2.metric("drongo_active_dialogs") == 0
    });
    assert!(over.is_some(), "the call is over\n{}", n2.log());
}

/// The leader and its term as `d` sees them; whether `d` leads.
fn leader(d: &Drongo) -> (Option<u64>, u64, bool) {
    let c = cluster(d);
    let l = &c["leader"];
    (
        l["id"].as_u64(),
        l["term"].as_u64().unwrap_or(0),
        c["leading"] == true,
    )
}

/// The member of `nodes` that leads, once every one of them agrees on it.
fn agreed_leader(nodes: &[&Drongo], limit: Duration) -> Option<(usize, u64)> {
    let mut found = None;
    within(limit, || {
        let views: Vec<_> = nodes.iter().map(|d| leader(d)).collect();
        let leading: Vec<usize> = (0..nodes.len()).filter(|i| views[*i].2).collect();
        let [i] = leading[..] else { return false };
        let id = views[i].0;
        let term = views[i].1;
        found = Some((i, term));
        views.iter().all(|v| v.0 == id && v.1 == term)
    })?;
    found
}

#[test]
fn leader_election_failover_and_fencing() {
    let a = 24_000 + (std::process::id() % 2_000) as u16 * 5;
    let mut nodes = [member(5390, a), member(5392, a + 1), member(5394, a + 2)];
    let refs: Vec<&Drongo> = nodes.iter().collect();
    let (first, term1) = agreed_leader(&refs, Duration::from_secs(5)).expect("one leader");
    assert!(term1 >= 1);
    assert_eq!(refs[first].metric("drongo_leader"), 1);

    // kill -9 the leader: another is elected within a TTL of its record's last renewal
    // (the others look every third of the TTL), with a larger term.
    nodes[first].kill9();
    let killed = Instant::now();
    let rest: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let refs: Vec<&Drongo> = rest.iter().map(|i| &nodes[*i]).collect();
    let (second, term2) =
        agreed_leader(&refs, Duration::from_millis(TTL_MS * 4)).expect("a new leader");
    let took = killed.elapsed();
    println!("new leader (term {term2}, was {term1}) {took:?} after kill -9 (TTL {TTL_MS} ms)");
    assert!(term2 > term1, "the fencing token grows");
    assert!(took <= Duration::from_millis(TTL_MS * 2), "{took:?}");
    let second = rest[second];

    // SIGSTOP the new leader past its lease: the last member takes the office with a
    // larger term; on SIGCONT the stopped one does not act as the leader (its record's
    // renewal is refused: the record is another's), and never is elected again meanwhile.
    let won_before = nodes[second].metric("drongo_elections_won_total");
    nodes[second].signal("-STOP");
    let third = rest.iter().copied().find(|i| *i != second).unwrap_or(0);
    let (_, term3) = agreed_leader(&[&nodes[third]], Duration::from_millis(TTL_MS * 4))
        .expect("a leader after the stop");
    nodes[second].signal("-CONT");
    assert!(term3 > term2);
    for _ in 0..20 {
        assert!(
            !leader(&nodes[second]).2,
            "the stopped leader acts as leader after SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(TTL_MS / 10));
    }
    assert!(leader(&nodes[third]).2, "the new leader keeps the office");
    assert_eq!(
        nodes[second].metric("drongo_elections_won_total"),
        won_before
    );
    let refs: Vec<&Drongo> = [second, third].iter().map(|i| &nodes[*i]).collect();
    assert_eq!(
        agreed_leader(&refs, Duration::from_secs(3)).map(|l| l.1),
        Some(term3),
        "both agree on the new leader"
    );

    // The store itself fences the chores: its term counter names the leader in office, a
    // write fenced by the stopped leader's term is refused (its late writes cannot land,
    // whatever record they touch), the same write under the current term is taken.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use drongo::store::conformance::{one, put};
        use drongo::store::{AnyStore, Store, StoreError};
        use drongo_core::store::LEADER_TERM_KEY;
        let s = AnyStore::open(&store_url(a))
            .await
            .expect("the test's etcd");
        let now = drongo::runtime::now_ms();
        let counter = s.get(LEADER_TERM_KEY, now).await.expect("read");
        assert_eq!(
            counter.map(|r| r.version),
            Some(term3),
            "the counter's term"
        );
        let probe = "reg/fence-probe";
        let late = one(&s, put(probe, b"late", 1, None).fenced(term2)).await;
        assert_eq!(late, Err(StoreError::Fenced), "the deposed leader's write");
        assert_eq!(s.get(probe, now).await.expect("read"), None);
        one(&s, put(probe, b"now", 1, None).fenced(term3))
            .await
            .expect("the leader's write");
    });
}
