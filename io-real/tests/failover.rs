//! Failover time with real processes on the 3-member etcd of `ci/etcd.sh`: a call set up
//! through node 1, `kill -9` node 1, and the caller sends INFO to node 2 every 100 ms
//! (each a new transaction, as a phone retrying would) until one is answered 200 after
//! node 2 took the call over and relayed the INFO to the callee. The time from the kill to
//! that 200 is the failover time: about the lease TTL (node 1's record must run out) plus
//! the time node 2 takes to see it gone (its view is renewed every third of the TTL).
//!
//! `DRONGO_FAILOVER_REPS` repetitions (default 2) with `DRONGO_FAILOVER_TTL_MS` (default
//! 1000) and `DRONGO_FAILOVER_STRATEGY` (default `lazy`); `ci/bench-failover.sh` runs 20 of
//! each TTL and strategy and prints the medians.
#![cfg(feature = "etcd")]

mod common;

use common::party::{callee, header, ok_to, place_call, sip, Heard};
use common::Drongo;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The store of repetition `rep`: each is a cluster of its own.
fn store_url(rep: u64) -> String {
    common::etcd_url(&format!("failover-{rep}"))
}

/// A call through node 1 of two: the nodes, the caller's socket and what its in-dialog
/// requests need, and the callee.
struct Rig {
    n1: Drongo,
    n2: Drongo,
    caller: UdpSocket,
    cp: u16,
    target: String,
    to: String,
    call_id: String,
    stop: Arc<AtomicBool>,
    callee: Option<std::thread::JoinHandle<()>>,
    callee_byes: Arc<AtomicU64>,
    callee_heard: Heard,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.callee.take() {
            let _ = t.join();
        }
    }
}

fn rig(rep: u64, ttl: u64, extra: &str, strategy: &str) -> Rig {
    // Ids and ports of this process and repetition only (the etcd cluster is shared).
    let base = 24_000 + (std::process::id() % 600) as u16 * 60 + (rep as u16 % 25) * 2;
    let callee_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_port = callee_sock.local_addr().unwrap().port();
    let config = format!(
        "{extra}\n[cluster]\nlease_ttl_ms = {ttl}\nstrategy = \"{strategy}\"\n\n[[routes]]\nuser = \"bob\"\ntarget = \"sip:bob@127.0.0.1:{callee_port}\"\n"
    );
    let url = store_url(rep);
    let (a, b) = (base.to_string(), (base + 1).to_string());
    let sip_port = 5400 + (rep as u16 % 25) * 4;
    let n1 = Drongo::start_with(sip_port, &config, &["--store", &url, "--node-id", &a]);
    let n2 = Drongo::start_with(sip_port + 2, &config, &["--store", &url, "--node-id", &b]);
    let stop = Arc::new(AtomicBool::new(false));
    let callee_byes = Arc::new(AtomicU64::new(0));
    let callee_heard = Heard::default();
    let callee_thread = callee(
        callee_sock,
        stop.clone(),
        callee_byes.clone(),
        callee_heard.clone(),
    );

    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let cp = caller.local_addr().unwrap().port();
    let call_id = format!("failover-{}-{rep}", std::process::id());
    let placed = place_call(&caller, n1.sip, &call_id, || n1.log());
    std::thread::sleep(Duration::from_millis(200));

    Rig {
        n1,
        n2,
        caller,
        cp,
        target: placed.target,
        to: placed.to,
        call_id,
        stop,
        callee: Some(callee_thread),
        callee_byes,
        callee_heard,
    }
}

/// One repetition: the failover time. With `hot-standby` node 2 (the call's standby) took
/// the call over from its copy, reading nothing.
fn once(rep: u64, ttl: u64, strategy: &str) -> Duration {
    let mut r = rig(rep, ttl, "", strategy);
    if strategy == "hot-standby" {
        assert_eq!(r.n2.metric("drongo_standby_calls"), 1, "{}", r.n2.log());
    }
    // The kill lands at a different point of the renewal cycle in each repetition (a
    // survivor looks at the members every third of the TTL): without this every run
    // would measure the same phase, and two configurations could differ by phase alone.
    std::thread::sleep(Duration::from_millis((rep * 97) % (ttl / 3)));
    r.n1.kill9();
    let killed = Instant::now();
    info_until_200(&r, 2, killed, ttl);
    let took = killed.elapsed();
    assert!(r.n2.metric("drongo_takeovers_total") >= 1);
    if strategy == "hot-standby" {
        assert_eq!(r.n2.metric("drongo_standby_takeovers_total"), 1);
    }
    took
}

/// The caller sends INFO (CSeq from `cseq` on) to node 2 every 100 ms, each a new
/// transaction as a phone retrying would, until one is answered 200; the next CSeq.
fn info_until_200(r: &Rig, mut cseq: u32, since: Instant, ttl: u64) -> u32 {
    let (cp, target, to, call_id) = (r.cp, r.target.clone(), r.to.clone(), r.call_id.clone());
    let (caller, n2) = (&r.caller, &r.n2);
    let mut buf = [0u8; 8192];
    loop {
        assert!(
            since.elapsed() < Duration::from_millis(ttl * 3 + 3_000),
            "no 200 from node 2\n{}",
            n2.log()
        );
        let info = format!(
            "INFO {target} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{cp};branch=z9hG4bK{call_id}-i{cseq}\n\
             Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=ca\nTo: {to}\nCall-ID: {call_id}\n\
             CSeq: {cseq} INFO\nContent-Length: 0\n\n"
        );
        caller.send_to(&sip(&info), ("127.0.0.1", n2.sip)).unwrap();
        let sent = Instant::now();
        let mut answered = None;
        while sent.elapsed() < Duration::from_millis(100) {
            let Ok(n) = caller.recv(&mut buf) else {
                break;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if header(&text, "CSeq") == format!("{cseq} INFO") && !text.starts_with("SIP/2.0 1") {
                answered = Some(text);
                break;
            }
        }
        cseq += 1;
        match answered {
            Some(t) if t.starts_with("SIP/2.0 200") => return cseq,
            // 503: the owner still counts as alive; anything else is wrong.
            Some(t) if t.starts_with("SIP/2.0 503") => {}
            Some(t) => panic!("node 2 answered {}", t.lines().next().unwrap_or("")),
            None => {}
        }
        let spent = sent.elapsed();
        if spent < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(100) - spent);
        }
    }
}

#[test]
fn failover_time_after_kill_9() {
    let reps = env_or("DRONGO_FAILOVER_REPS", 2);
    let ttl = env_or("DRONGO_FAILOVER_TTL_MS", 1_000);
    let strategy = std::env::var("DRONGO_FAILOVER_STRATEGY").unwrap_or_else(|_| "lazy".into());
    let mut times: Vec<Duration> = (0..reps).map(|r| once(r, ttl, &strategy)).collect();
    times.sort();
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    let median = ms.get(ms.len() / 2).copied().unwrap_or(0);
    println!(
        "failover (strategy {strategy}, lease TTL {ttl} ms, {reps} runs): median {median} ms, min {} ms, max {} ms; all {ms:?}",
        ms.first().copied().unwrap_or(0),
        ms.last().copied().unwrap_or(0)
    );
    // The goal (issue 11: median within the lease TTL + 0.5 s) is a measurement, read
    // from this line (ci/bench-failover.sh), not asserted.
}

/// Hot standby: node 2 holds the call's record from the store watch, and takes the call
/// over for the caller's request without reading it (`drongo_standby_takeovers_total`).
#[test]
fn the_hot_standby_takes_over_without_a_store_read() {
    let took = once(22, 1_000, "hot-standby");
    println!("failover (strategy hot-standby, lease TTL 1000 ms): {took:?}");
}

/// A call whose parties go silent after its node dies is still ended on time: the member
/// that rendezvous hashing gives it adopts it from the owner index and sends BYE to both
/// legs at its maximum duration (3 s here).
#[test]
fn a_silent_call_is_ended_by_its_adopter() {
    // Repetition 24: the failover test uses 0..20.
    let mut r = rig(24, 1_000, "max_call_duration_secs = 3", "lazy");
    r.n1.kill9();
    let killed = Instant::now();
    r.caller
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 8192];
    let bye = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no BYE to the caller\n{}",
            r.n2.log()
        );
        let Ok((n, from)) = r.caller.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("BYE") {
            break (text, from);
        }
    };
    let (text, from) = bye;
    assert_eq!(from.port(), r.n2.sip, "from the adopter");
    r.caller.send_to(&sip(&ok_to(&text)), from).unwrap();
    let ended = Instant::now();
    while r.callee_byes.load(Ordering::Relaxed) == 0 || r.n2.metric("drongo_active_dialogs") > 0 {
        assert!(
            ended.elapsed() < Duration::from_secs(5),
            "the callee's BYE, the call's end\n{}",
            r.n2.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(r.n2.metric("drongo_adoptions_total"), 1);
    println!(
        "silent call ended by its adopter {:?} after the kill",
        killed.elapsed()
    );
}

/// Split brain: node 1, the call's owner, is stopped (SIGSTOP) for three lease TTLs; node 2
/// takes the call over when the caller's INFO comes, and ends it at its maximum duration
/// (3 s), BYE to both legs. Continued (SIGCONT), node 1 finds that same timer overdue and
/// an INFO from the caller waiting, yet sends nothing for the call again: neither party
/// hears from it (the INFO gets at most a 503), and it joins again with a new incarnation.
#[test]
fn a_stopped_owner_is_silent_after_it_continues() {
    // Repetition 23: the failover test uses 0..20, the silent call 24.
    let r = rig(23, 1_000, "max_call_duration_secs = 3", "lazy");
    let answered = Instant::now();
    let before = r.n1.metric("drongo_incarnation");
    r.n1.signal("-STOP");
    let stopped = Instant::now();
    let cseq = info_until_200(&r, 2, stopped, 1_000);
    assert!(r.n2.metric("drongo_takeovers_total") >= 1);
    std::thread::sleep(Duration::from_millis(3_000).saturating_sub(stopped.elapsed()));
    r.n1.signal("-CONT");
    let continued = Instant::now();
    // A phone that still uses node 1 tries it.
    let info = format!(
        "INFO {} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK{}-n1\n\
         Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=ca\nTo: {}\nCall-ID: {}\n\
         CSeq: {cseq} INFO\nContent-Length: 0\n\n",
        r.target, r.cp, r.call_id, r.to, r.call_id
    );
    r.caller
        .send_to(&sip(&info), ("127.0.0.1", r.n1.sip))
        .unwrap();
    // Until the maximum duration has passed and node 2's BYEs are answered: what the
    // caller hears.
    let mut caller_heard = Vec::new();
    let mut buf = [0u8; 8192];
    while answered.elapsed() < Duration::from_secs(7) {
        let Ok((n, from)) = r.caller.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        caller_heard.push((from.port(), text.lines().next().unwrap_or("").to_string()));
        if text.starts_with("BYE") {
            r.caller.send_to(&sip(&ok_to(&text)), from).unwrap();
        }
    }
    let n1 = r.n1.sip;
    let from_n1: Vec<&(u16, String)> = caller_heard
        .iter()
        .filter(|(p, l)| *p == n1 && !l.starts_with("SIP/2.0 503"))
        .collect();
    assert!(
        from_n1.is_empty(),
        "node 1 spoke to the caller: {from_n1:?}"
    );
    assert!(
        caller_heard
            .iter()
            .any(|(p, l)| *p == r.n2.sip && l.starts_with("BYE")),
        "node 2 ended the call: {caller_heard:?}"
    );
    let callee_from_n1: Vec<(u16, String)> = r
        .callee_heard
        .lock()
        .map(|h| {
            h.iter()
                .filter(|(at, p, _)| *at >= continued && *p == n1)
                .map(|(_, p, l)| (*p, l.clone()))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        callee_from_n1.is_empty(),
        "node 1 spoke to the callee: {callee_from_n1:?}"
    );
    assert!(
        r.callee_byes.load(Ordering::Relaxed) >= 1,
        "the callee got node 2's BYE"
    );
    assert!(
        r.n1.metric("drongo_incarnation") > before,
        "node 1 joined again\n{}",
        r.n1.log()
    );
    println!(
        "split brain: node 1 stopped {:?}, silent after SIGCONT; caller heard {caller_heard:?}",
        continued - stopped
    );
}

/// A member that started again after its calls were adopted forwards a request for one of
/// them (its phone still sends to it: the call's Contact names it) to the adopter, and the
/// answer comes back through it.
#[test]
fn a_restarted_member_forwards_requests_for_its_adopted_calls() {
    let mut r = rig(21, 1_000, "", "lazy");
    r.n1.kill9();
    let cseq = info_until_200(&r, 2, Instant::now(), 1_000);
    assert_eq!(r.n2.metric("drongo_takeovers_total"), 1);
    r.n1.spawn();
    // Node 1 is back (a new incarnation); the call is node 2's. The caller's INFO to
    // node 1 is forwarded to node 2, and its 200 comes back through node 1.
    let mut buf = [0u8; 8192];
    let (cp, target, to, call_id) = (r.cp, r.target.clone(), r.to.clone(), r.call_id.clone());
    let started = Instant::now();
    let mut cseq = cseq;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no 200 through node 1\n{}",
            r.n1.log()
        );
        let info = format!(
            "INFO {target} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{cp};branch=z9hG4bK{call_id}-r{cseq}\n\
             Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=ca\nTo: {to}\nCall-ID: {call_id}\n\
             CSeq: {cseq} INFO\nContent-Length: 0\n\n"
        );
        r.caller
            .send_to(&sip(&info), ("127.0.0.1", r.n1.sip))
            .unwrap();
        let sent = Instant::now();
        let mut answer = None;
        while sent.elapsed() < Duration::from_millis(300) && answer.is_none() {
            if let Ok((n, from)) = r.caller.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if header(&text, "CSeq") == format!("{cseq} INFO") && !text.starts_with("SIP/2.0 1")
                {
                    answer = Some((text.lines().next().unwrap_or("").to_string(), from.port()));
                }
            }
        }
        cseq += 1;
        match answer {
            Some((line, port)) if line.starts_with("SIP/2.0 200") => {
                assert_eq!(port, r.n1.sip, "the answer comes back through node 1");
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert!(r.n1.metric("drongo_forwarded_total") >= 1);
    assert!(r.n1.metric("drongo_forwarded_responses_total") >= 1);
    assert_eq!(
        r.n1.metric("drongo_takeovers_total"),
        0,
        "node 2 keeps the call"
    );
}
