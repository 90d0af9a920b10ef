//! The distributed registrar with real `drongo` processes on the 3-member etcd of
//! `ci/etcd.sh`: a phone registered through one member is called through the others at
//! once, a REGISTER query through any member lists what the store holds, two phones of one
//! user registering through two members at once both stay bound (compare-and-swap, no lost
//! update), expired bindings are removed by the leader, and by the next leader within a
//! watchdog period after the first is killed, and a binding registered over a connection
//! to a member that is killed is removed by the leader (nobody else can reach its phone).
#![cfg(feature = "etcd")]

mod common;

use common::party::calls_reach;
use common::reg::{contacts, register_user, udp};
use common::Drongo;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const TTL_MS: u64 = 1_000;

fn config() -> String {
    format!(
        "[cluster]\nlease_ttl_ms = {TTL_MS}\n[timers]\nt1 = 100\nt2 = 4000\nt4 = 5000\n\
         [registrar]\nmin_expires = 1\n"
    )
}

/// Three members of a cluster of this test (`name`), SIP ports from `port`.
fn cluster(name: &str, port: u16, base: u16) -> Vec<Drongo> {
    let url = common::etcd_url(name);
    (0..3)
        .map(|i| {
            let id = (base + i).to_string();
            Drongo::start_with(
                port + 2 * i,
                &config(),
                &["--store", &url, "--node-id", &id],
            )
        })
        .collect()
}

/// Member ids of this process (the etcd cluster is shared by concurrent tests and runs).
fn base(offset: u16) -> u16 {
    30_000 + (std::process::id() % 1_000) as u16 * 10 + offset
}

/// A REGISTER for bob (see `common::reg::register_user`).
fn register(sock: &UdpSocket, node: u16, call_id: &str, cseq: u32, expires: u32) -> String {
    register_user(sock, node, "bob", call_id, cseq, expires)
}

#[test]
fn a_phone_registered_through_one_member_is_called_through_the_others() {
    let nodes = cluster("reg-call", 5600, base(0));
    let phone = udp();
    let ok = register(&phone, nodes[0].sip, "reg-call", 1, 600);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // At once (no pause for the watch): through node 2, then node 3.
    let ports = [nodes[1].sip, nodes[2].sip];
    let invites = calls_reach(phone.try_clone().unwrap(), &ports, "reg-call", || {
        nodes[1].log() + &nodes[2].log()
    });
    assert!(invites >= 2, "the phone got {invites} INVITEs");
    let read = nodes[1].metric("drongo_lookups_read_through_total")
        + nodes[2].metric("drongo_lookups_read_through_total");
    println!("INVITE lookups that read the store: {read} of 2");

    // A query through node 3 lists the binding; after a de-registration through node 1,
    // a query through node 2 lists nothing, and a call through node 3 finds nobody.
    let q = udp();
    let listed = register(&q, nodes[2].sip, "reg-q", 1, u32::MAX);
    assert_eq!(contacts(&listed).len(), 1, "{listed}");
    let gone = register(&phone, nodes[0].sip, "reg-call", 2, 0);
    assert!(gone.starts_with("SIP/2.0 200"), "{gone}");
    let listed = register(&q, nodes[1].sip, "reg-q", 2, u32::MAX);
    assert!(contacts(&listed).is_empty(), "{listed}");
}

/// Two phones of bob, each a SIPp refreshing its registration 60 times (one Call-ID, CSeq
/// one higher each time, the next REGISTER 10 ms after each 200), one through node 1 and
/// one through node 2 at once: each REGISTER is a compare-and-swap on bob's record, the
/// loser's 200 is withdrawn and its retransmission applied on the winner's record. At the
/// end exactly the two bindings are listed through every member (§10.3: nothing lost,
/// nothing added), each with its full expiry.
#[test]
fn racing_registers_through_two_members_lose_no_binding() {
    let nodes = cluster("reg-race", 5620, base(3));
    let dir = nodes[0].dir.clone();
    let ports = [5691, 5692];
    let runs: Vec<_> = [nodes[0].sip, nodes[1].sip]
        .into_iter()
        .zip(ports)
        .map(|(node, port)| {
            let extra = ["-s", "bob"];
            common::sipp(&dir, "register_refresh", port, Some(node), &extra)
        })
        .collect();
    for r in runs {
        assert!(
            r.succeeded(Duration::from_secs(30)),
            "a SIPp REGISTER failed"
        );
    }
    let conflicts: u64 = nodes
        .iter()
        .map(|n| n.metric("drongo_store_failures_total"))
        .sum();
    println!("REGISTERs whose compare-and-swap lost the race: {conflicts}");
    for n in &nodes {
        let listed = contacts(&register(&udp(), n.sip, "race-q", 1, u32::MAX));
        assert_eq!(listed.len(), 2, "{listed:?}");
        for p in ports {
            let c = listed.iter().find(|c| c.contains(&format!(":{p}>")));
            let expires = c.and_then(|c| c.split("expires=").nth(1)?.parse::<u64>().ok());
            assert!(expires.is_some_and(|e| e > 590), "{p}: {listed:?}");
        }
    }
}

/// Bindings that expire are removed from the store by the leader alone; when the leader
/// is killed, the next one removes those that expire after, within a watchdog period of
/// its election.
#[test]
fn the_leader_removes_expired_bindings_and_so_does_the_next() {
    let mut nodes = cluster("reg-watchdog", 5640, base(6));
    let leader = |nodes: &[Drongo]| nodes.iter().position(|n| n.metric("drongo_leader") == 1);
    let started = Instant::now();
    let first = loop {
        if let Some(i) = leader(&nodes) {
            break i;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no leader");
        std::thread::sleep(Duration::from_millis(50));
    };
    // One phone stays bound (the record lives on); others expire, 1 s after registering.
    let keep = udp();
    assert!(register(&keep, nodes[0].sip, "keep", 1, 600).starts_with("SIP/2.0 200"));
    let short: Vec<UdpSocket> = (0..3).map(|_| udp()).collect();
    for (i, s) in short.iter().enumerate() {
        let r = register(s, nodes[i].sip, &format!("short-{i}"), 1, 1);
        assert!(r.starts_with("SIP/2.0 200"), "{r}");
    }
    let removed = |nodes: &[Drongo]| -> Vec<u64> {
        nodes
            .iter()
            .map(|n| n.metric("drongo_bindings_expired_total"))
            .collect()
    };
    let started = Instant::now();
    while removed(&nodes)[first] < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the leader removed {:?}",
            removed(&nodes)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts = removed(&nodes);
    assert_eq!(
        counts.iter().sum::<u64>(),
        3,
        "only the leader writes: {counts:?}"
    );

    // The leader dies; bindings registered now expire after the next leader is elected.
    nodes[first].kill9();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    for (k, i) in survivors.iter().enumerate() {
        let r = register(&short[k], nodes[*i].sip, &format!("short-{k}"), 2, 2);
        assert!(r.starts_with("SIP/2.0 200"), "{r}");
    }
    let next = loop {
        if let Some(i) = survivors
            .iter()
            .copied()
            .find(|i| nodes[*i].metric("drongo_leader") == 1)
        {
            break i;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no new leader");
        std::thread::sleep(Duration::from_millis(50));
    };
    let elected = killed.elapsed();
    while nodes[next].metric("drongo_bindings_expired_total") < 2 {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the new leader removed {}",
            nodes[next].metric("drongo_bindings_expired_total")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "new leader {:?} after kill -9; expired bindings removed {:?} after the kill",
        elected,
        killed.elapsed()
    );
    let others: u64 = survivors
        .iter()
        .filter(|i| **i != next)
        .map(|i| nodes[*i].metric("drongo_bindings_expired_total"))
        .sum();
    assert_eq!(others, 0, "only the leader writes");
}

/// Sends bob's REGISTER over `conn` (TCP, kept open: the phone's flow) for a contact on
/// `port`; returns the response.
fn register_tcp(conn: &mut std::net::TcpStream, port: u16) -> String {
    use std::io::{Read, Write};
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKflow1\n\
         Max-Forwards: 70\nFrom: <sip:bob@127.0.0.1>;tag=f\nTo: <sip:bob@127.0.0.1>\n\
         Call-ID: flow-1\nCSeq: 1 REGISTER\nContact: <sip:bob@127.0.0.1:{port};transport=tcp>;expires=600\n\
         Content-Length: 0\n\n"
    );
    conn.write_all(&common::party::sip(&text)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// A phone registered over TCP to one member (no Path) is reached through that connection
/// alone: when that member is killed, the leader removes the binding (the phone must
/// register again), and keeps one registered over UDP through the same member.
#[test]
fn bindings_whose_connection_died_with_its_member_are_removed() {
    let mut nodes = cluster("reg-flow", 5630, base(6));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", nodes[0].sip)).unwrap();
    let tcp_port = conn.local_addr().unwrap().port();
    let ok = register_tcp(&mut conn, tcp_port);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let udp_phone = udp();
    let ok = register(&udp_phone, nodes[0].sip, "flow-udp", 1, 600);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let q = udp();
    let mut cseq = 0;
    let mut listed = |node: u16| {
        cseq += 1;
        contacts(&register(&q, node, "flow-q", cseq, u32::MAX))
    };
    assert_eq!(listed(nodes[1].sip).len(), 2);
    nodes[0].kill9();
    let killed = Instant::now();
    loop {
        let now_listed = listed(nodes[1].sip);
        if now_listed.len() == 1 {
            assert!(!now_listed[0].contains("transport=tcp"), "{now_listed:?}");
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the TCP binding outlived its member: {now_listed:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let removed: u64 = nodes[1..]
        .iter()
        .map(|n| n.metric("drongo_flow_bindings_removed_total"))
        .sum();
    assert_eq!(removed, 1);
    println!(
        "binding over TCP to the killed member removed {:?} after kill -9 (lease TTL {TTL_MS} ms)",
        killed.elapsed()
    );
    drop(conn);
}
