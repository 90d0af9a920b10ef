//! Two regions with real processes: region A is two members on the 3-member etcd of
//! `ci/etcd.sh`, region B one member on an etcd of its own (one member, started here).
//! Each region's leader copies its registrations into the other region's store, through
//! a TCP relay this test can cut (the link between the regions).
//!
//! Registered in A, found in B (the replication lag measured, p50 and p99) and called
//! through B; the link cut: both regions keep serving their own phones; meanwhile in A a
//! binding is removed, one expires and one is added; healed: B lists exactly what A holds
//! (no removed or expired binding comes back), and A finds what was registered in B.
#![cfg(feature = "etcd")]

mod common;

use common::party::calls_reach;
use common::proxy::Relay;
use common::reg::{contacts, register_user, udp};
use common::Drongo;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TTL_MS: u64 = 1_000;
const B_CLIENT: u16 = 42_379;
const B_PEER: u16 = 42_380;
/// Phones registered in A whose copies B must find (the lag's sample).
const SAMPLE: usize = 100;

/// Region B's store: one etcd member, stopped (by its pid) when dropped.
struct Etcd(Child, std::path::PathBuf);

impl Etcd {
    fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!("drongo-region-b-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let client = format!("http://127.0.0.1:{B_CLIENT}");
        let peer = format!("http://127.0.0.1:{B_PEER}");
        let child = Command::new("etcd")
            .args(["--name", "b", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("b={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) is installed");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", B_CLIENT)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "region B's etcd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd(child, dir)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn config(region: &str, other: &str, url: &str) -> String {
    format!(
        "[cluster]\nlease_ttl_ms = {TTL_MS}\nregion = \"{region}\"\n[cluster.regions]\n{other} = \"{url}\"\n\
         [timers]\nt1 = 100\nt2 = 4000\nt4 = 5000\n[registrar]\nmin_expires = 1\n"
    )
}

/// Whether a query for `user` through `node` lists a contact on `port`.
fn lists(node: u16, user: &str, port: u16, cseq: &mut u32) -> bool {
    let q = udp();
    *cseq += 1;
    let resp = register_user(&q, node, user, &format!("q-{user}-{cseq}"), *cseq, u32::MAX);
    contacts(&resp)
        .iter()
        .any(|c| c.contains(&format!(":{port}>")))
}

/// Polls until `cond` holds (every 2 ms, up to `limit`); how long it took.
fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn registrations_cross_regions_and_converge_after_a_partition() {
    let b_store = Etcd::start();
    let a_eps = std::env::var("DRONGO_ETCD_ENDPOINTS").expect("DRONGO_ETCD_ENDPOINTS");
    let a_first: SocketAddr = a_eps.split(',').next().unwrap().parse().unwrap();
    let ns = format!("test-regions-{}", std::process::id());
    // The links between the regions: A's leader writes to B's store through `to_b`, B's
    // leader to A's through `to_a`.
    let to_b = Relay::start(SocketAddr::from(([127, 0, 0, 1], B_CLIENT)));
    let to_a = Relay::start(a_first);
    let a_url = format!("etcd://{a_eps}/{ns}");
    let b_url = format!("etcd://127.0.0.1:{B_CLIENT}/{ns}");
    let a_cfg = config("a", "b", &format!("etcd://127.0.0.1:{}/{ns}", to_b.port));
    let b_cfg = config("b", "a", &format!("etcd://127.0.0.1:{}/{ns}", to_a.port));
    let id = 40_000 + (std::process::id() % 1_000) as u16 * 4;
    let a: Vec<Drongo> = (0..2u16)
        .map(|i| {
            let nid = (id + i).to_string();
            Drongo::start_with(
                5900 + 2 * i,
                &a_cfg,
                &["--store", &a_url, "--node-id", &nid],
            )
        })
        .collect();
    let b_nid = (id + 2).to_string();
    let b = Drongo::start_with(5904, &b_cfg, &["--store", &b_url, "--node-id", &b_nid]);
    // Until each region has a leader copying (a sync done).
    until(Duration::from_secs(10), "regions never synced", || {
        a.iter()
            .map(|n| n.metric("drongo_region_syncs_total"))
            .sum::<u64>()
            > 0
            && b.metric("drongo_region_syncs_total") > 0
    });

    // Registered in A, found in B: the lag from A's 200 to B's listing.
    let mut cseq = 0;
    let phones: Vec<_> = (0..SAMPLE).map(|_| udp()).collect();
    let mut lags = Vec::new();
    for (k, p) in phones.iter().enumerate() {
        let user = format!("u{k}");
        let ok = register_user(p, a[k % 2].sip, &user, &format!("reg-{k}"), 1, 600);
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let port = p.local_addr().unwrap().port();
        lags.push(until(Duration::from_secs(10), "not copied to B", || {
            lists(b.sip, &user, port, &mut cseq)
        }));
    }
    lags.sort();
    println!(
        "replication lag A -> B over {SAMPLE} REGISTERs (200 in A to listed in B): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[SAMPLE - 1]
    );

    // A call placed in B reaches bob, who registered in A.
    let bob = udp();
    let ok = register_user(&bob, a[0].sip, "bob", "reg-bob", 1, 600);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let bob_port = bob.local_addr().unwrap().port();
    until(Duration::from_secs(10), "bob not copied to B", || {
        lists(b.sip, "bob", bob_port, &mut cseq)
    });
    let invites = calls_reach(bob, &[b.sip], "region-call", || b.log());
    assert_eq!(invites, 1, "the call placed in B reached bob");

    // u1 re-registers for 3 s, and B gets that copy; then the link is cut. Meanwhile, in
    // A: u0 de-registers, carol registers; in B: dave registers. Each region serves its
    // own phones, and B never serves u1's copy past its expiry.
    let p = |k: usize| phones[k].local_addr().unwrap().port();
    let short = register_user(&phones[1], a[1].sip, "u1", "reg-1", 2, 3);
    assert!(short.starts_with("SIP/2.0 200"), "{short}");
    std::thread::sleep(Duration::from_millis(500));
    to_b.cut();
    to_a.cut();
    let gone = register_user(&phones[0], a[0].sip, "u0", "reg-0", 2, 0);
    assert!(gone.starts_with("SIP/2.0 200"), "{gone}");
    let (carol, dave) = (udp(), udp());
    let ok = register_user(&carol, a[1].sip, "carol", "reg-carol", 1, 600);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let ok = register_user(&dave, b.sip, "dave", "reg-dave", 1, 600);
    assert!(
        ok.starts_with("SIP/2.0 200"),
        "B serves its phones while cut off: {ok}"
    );
    assert!(lists(
        b.sip,
        "dave",
        dave.local_addr().unwrap().port(),
        &mut cseq
    ));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !lists(b.sip, "u1", p(1), &mut cseq),
        "an expired copy served"
    );
    let stale = lists(b.sip, "u0", p(0), &mut cseq);
    println!("while cut off, B still lists u0's removed binding: {stale}");

    // Healed: B converges on what A holds, and A finds dave.
    to_b.heal();
    to_a.heal();
    let carol_port = carol.local_addr().unwrap().port();
    let healed = until(Duration::from_secs(20), "carol never copied to B", || {
        lists(b.sip, "carol", carol_port, &mut cseq)
    });
    until(
        Duration::from_secs(10),
        "u0's removal never reached B",
        || !lists(b.sip, "u0", p(0), &mut cseq),
    );
    let dave_port = dave.local_addr().unwrap().port();
    until(Duration::from_secs(20), "dave never copied to A", || {
        lists(a[0].sip, "dave", dave_port, &mut cseq)
            && lists(a[1].sip, "dave", dave_port, &mut cseq)
    });
    println!("after the heal, B listed carol in {healed:?}");
    // No resurrection: B lists neither u0 nor u1 from now on, and still every other phone.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !lists(b.sip, "u0", p(0), &mut cseq),
        "a removed binding came back"
    );
    assert!(
        !lists(b.sip, "u1", p(1), &mut cseq),
        "an expired binding came back"
    );
    for k in 2..SAMPLE {
        assert!(
            lists(b.sip, &format!("u{k}"), p(k), &mut cseq),
            "u{k} lost in B"
        );
    }
    let failures: u64 = a
        .iter()
        .map(|n| n.metric("drongo_region_sync_failures_total"))
        .sum();
    println!("copying from A interrupted {failures} times by the cut");
    drop(b_store);
}
