//! A rolling restart with calls up, with real processes on the 3-member etcd of
//! `ci/etcd.sh`: three members, six calls set up through them (two each), then each member
//! in turn is stopped with SIGTERM (it drains, says so, and leaves the cluster) and started
//! again. After every step each call still answers an INFO with 200, and at the end each
//! call's BYE is answered 200 and reaches the callee: no call is lost.
//!
//! The caller is a bare UDP socket per call that, like a phone trying the next DNS SRV
//! target, sends a request that gets no answer or a 503 (the member it reached does not
//! run the call, whose owner lives) to the next member: a new transaction each time.
#![cfg(feature = "etcd")]

mod common;

use common::party::{callee, header, place_call, sip, Heard};
use common::Drongo;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL_MS: u64 = 1_000;
const CALLS: usize = 6;

/// One confirmed call, from the caller's side.
struct Call {
    sock: UdpSocket,
    call_id: String,
    target: String,
    to: String,
    cseq: u32,
    ack: String,
    /// The member that answered its last request (tried first next time).
    node: usize,
}

impl Call {
    /// Sends `method` in the dialog to the members in turn, from `self.node` on, each copy a
    /// new transaction, until one answers 200 (within `limit`). The statuses seen on the way.
    fn ask(&mut self, method: &str, nodes: &[Drongo], limit: Duration) -> Result<(), Vec<String>> {
        let port = self.sock.local_addr().unwrap().port();
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        while started.elapsed() < limit {
            self.cseq += 1;
            let (cseq, node) = (self.cseq, &nodes[self.node]);
            let text = format!(
                "{method} {} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{}-{cseq}\n\
                 Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=ca\nTo: {}\nCall-ID: {}\n\
                 CSeq: {cseq} {method}\nContent-Length: 0\n\n",
                self.target, self.call_id, self.to, self.call_id
            );
            self.sock
                .send_to(&sip(&text), ("127.0.0.1", node.sip))
                .unwrap();
            let sent = Instant::now();
            let mut answer = None;
            while sent.elapsed() < Duration::from_millis(300) && answer.is_none() {
                let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                // A copy of the INVITE's 2xx (an adopter retransmits one whose ACK it
                // cannot know of) is acknowledged again, as a phone does (§13.2.2.4).
                if text.starts_with("SIP/2.0 200") && header(&text, "CSeq") == "1 INVITE" {
                    self.sock.send_to(&sip(&self.ack), from).unwrap();
                    continue;
                }
                let ours = header(&text, "CSeq") == format!("{cseq} {method}");
                if ours && text.starts_with("SIP/2.0") && !text.starts_with("SIP/2.0 1") {
                    answer = text.lines().next().map(str::to_string);
                }
            }
            match answer {
                Some(a) if a.starts_with("SIP/2.0 200") => return Ok(()),
                Some(a) if a.starts_with("SIP/2.0 503") => seen.push(a),
                // Anything else (481 above all) means the call is lost.
                Some(a) => {
                    seen.push(a);
                    return Err(seen);
                }
                None => seen.push(format!("no answer from {}", node.sip)),
            }
            self.node = (self.node + 1) % nodes.len();
        }
        Err(seen)
    }
}

/// The call's INVITE through `node`, answered by the callee, ACKed.
fn set_up(nodes: &[Drongo], node: usize, k: usize) -> Call {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let call_id = format!("rolling-{}-{k}", std::process::id());
    let placed = place_call(&sock, nodes[node].sip, &call_id, || nodes[node].log());
    Call {
        sock,
        call_id,
        target: placed.target,
        to: placed.to,
        cseq: 1,
        ack: placed.ack,
        node,
    }
}

/// How many members `d` sees among ids `base..base + 3`.
fn members_seen(d: &Drongo, base: u64) -> usize {
    let text = d.http("/cluster").unwrap_or_default();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["members"].as_array().map_or(0, |a| {
        a.iter()
            .filter_map(|m| m["id"].as_u64())
            .filter(|id| (base..base + 3).contains(id))
            .count()
    })
}

#[test]
fn a_rolling_restart_loses_no_call() {
    let base = 26_000 + (std::process::id() % 2_000) as u16 * 5;
    let callee_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_port = callee_sock.local_addr().unwrap().port();
    let (stop, byes, heard) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Heard::default(),
    );
    let callee_thread = callee(callee_sock, stop.clone(), byes.clone(), heard);
    let config = format!(
        "[cluster]\nlease_ttl_ms = {TTL_MS}\n\n[timers]\nt1 = 100\nt2 = 4000\nt4 = 5000\n\n[[routes]]\nuser = \"bob\"\ntarget = \"sip:bob@127.0.0.1:{callee_port}\"\n"
    );
    let url = common::etcd_url("rolling");
    let mut nodes: Vec<Drongo> = (0..3u16)
        .map(|i| {
            let id = (base + i).to_string();
            Drongo::start_with(5500 + i * 2, &config, &["--store", &url, "--node-id", &id])
        })
        .collect();
    // Until every member sees all three (within 5 s; `what` did not happen otherwise).
    let all_met = |nodes: &[Drongo], what: &str| {
        let start = Instant::now();
        while !nodes.iter().all(|d| members_seen(d, base.into()) == 3) {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    all_met(&nodes, "members never met");
    let mut calls: Vec<Call> = (0..CALLS).map(|k| set_up(&nodes, k % 3, k)).collect();
    // The restarts begin once the calls' 2xx windows (64·T1 = 6.4 s) are over. Within its
    // window an adopter retransmits a 2xx whose ACK it cannot know of (the ACK costs no
    // write), and ends the call if no ACK comes by the window's close (§13.3.1.4). A phone
    // ACKs every copy at once; these bare sockets read theirs only inside `ask`, so a copy
    // that came between two asks was ACKed late or not at all: the adopter ended the call,
    // and its BYE to the caller (who never answers one) held the member's drain past 10 s
    // (two fresh-clone CI runs; the drain's own log named the BYE and the Ending call).
    std::thread::sleep(Duration::from_millis(64 * 100 + 600));
    let limit = Duration::from_millis(TTL_MS * 5);
    for i in 0..nodes.len() {
        // SIGTERM: the member drains (nothing is in progress) and leaves at once.
        nodes[i].signal("-TERM");
        let drained = nodes[i].exit_within(Duration::from_secs(10));
        assert!(drained.is_some_and(|s| s.success()), "{}", nodes[i].log());
        for (k, c) in calls.iter_mut().enumerate() {
            c.ask("INFO", &nodes, limit)
                .unwrap_or_else(|seen| panic!("call {k} lost with member {i} down: {seen:?}"));
        }
        nodes[i].spawn();
        all_met(&nodes, &format!("member {i} never came back"));
        for (k, c) in calls.iter_mut().enumerate() {
            c.ask("INFO", &nodes, limit).unwrap_or_else(|seen| {
                panic!("call {k} lost after member {i} came back: {seen:?}")
            });
        }
    }
    let takeovers: u64 = nodes
        .iter()
        .map(|d| d.metric("drongo_takeovers_total"))
        .sum();
    for (k, c) in calls.iter_mut().enumerate() {
        c.ask("BYE", &nodes, limit)
            .unwrap_or_else(|seen| panic!("call {k}'s BYE: {seen:?}"));
    }
    let start = Instant::now();
    while byes.load(Ordering::Relaxed) < CALLS as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the callee got {} BYEs of {CALLS}",
            byes.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // (Counted by the members as they run now: a restart starts the count again.)
    println!("rolling restart of 3 members: {CALLS} calls kept, {takeovers} takeovers since the last restarts");
    assert!(takeovers > 0, "calls moved between members");
    stop.store(true, Ordering::Relaxed);
    let _ = callee_thread.join();
}
