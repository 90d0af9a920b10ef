//! The real `drongo` binary against real SIPp processes on loopback: registration with and
//! without digest auth, calls, CANCEL, busy, unknown user, re-INVITE, a 2xx whose ACK never
//! comes, and `kill -9` with a restart on the same data directory.
//!
//! Needs `sipp` (Debian `sip-tester`); `ci/install.sh` installs it.

mod common;

use common::{register, sipp, Drongo, SECS};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Runs callee `uas` on `uas_port` (registered as `user`) and caller `uac`.
fn call(
    d: &Drongo,
    user: &str,
    uas: &str,
    uas_port: u16,
    uac: &str,
    uac_port: u16,
    extra: &[&str],
) -> (bool, bool) {
    let callee = sipp(&d.dir, uas, uas_port, None, &[]);
    std::thread::sleep(Duration::from_millis(200));
    let mut args = vec!["-s", user];
    args.extend_from_slice(extra);
    let caller = sipp(&d.dir, uac, uac_port, Some(d.sip), &args);
    let c = caller.succeeded(SECS * 3);
    let e = callee.succeeded(SECS);
    (c, e)
}

#[test]
fn register_and_call_between_two_registered_users() {
    let d = Drongo::start(25060, "");
    register(&d, "bob", 25080);
    let (caller, callee) = call(&d, "bob", "uas", 25080, "uac", 25070, &["-d", "300"]);
    assert!(caller && callee, "{}", d.log());
    assert_eq!(d.metric("drongo_calls_answered_total"), 1);
    assert_eq!(d.metric("drongo_active_dialogs"), 0);
    assert_eq!(d.metric("drongo_registrations"), 1);
}

#[test]
fn register_with_digest_auth() {
    // SIPp 3.6 answers only the first challenge and only MD5, like many phones: the default
    // algorithm order must let it register.
    let cfg = "auth_required = true\n[[users]]\nname = \"bob\"\npassword = \"s3cret\"\n";
    let d = Drongo::start(25160, cfg);
    let ok = sipp(
        &d.dir,
        "register_auth",
        25180,
        Some(d.sip),
        &["-s", "bob", "-au", "bob", "-ap", "s3cret"],
    );
    assert!(ok.succeeded(SECS), "{}", d.log());
    assert_eq!(d.metric("drongo_registrations"), 1);
    let bad = sipp(
        &d.dir,
        "register_auth",
        25181,
        Some(d.sip),
        &["-s", "bob", "-au", "bob", "-ap", "wrong"],
    );
    assert!(!bad.succeeded(SECS), "a wrong password must not register");
    let plain = sipp(&d.dir, "register", 25182, Some(d.sip), &["-s", "bob"]);
    assert!(!plain.succeeded(SECS), "no credentials must not register");
    assert_eq!(d.metric("drongo_registrations"), 1);
}

#[test]
fn caller_cancels_during_ringing() {
    let d = Drongo::start(25260, "");
    register(&d, "bob", 25280);
    let (caller, callee) = call(&d, "bob", "uas_ring", 25280, "uac_cancel", 25270, &[]);
    assert!(caller && callee, "{}", d.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.metric("drongo_active_dialogs"), 0);
}

#[test]
fn callee_busy_is_relayed() {
    let d = Drongo::start(25360, "");
    register(&d, "bob", 25380);
    let (caller, callee) = call(&d, "bob", "uas_busy", 25380, "uac_busy", 25370, &[]);
    assert!(caller && callee, "{}", d.log());
    assert_eq!(d.metric("drongo_calls_failed_total"), 1);
}

#[test]
fn unknown_user_gets_404() {
    let d = Drongo::start(25460, "");
    let caller = sipp(
        &d.dir,
        "uac_notfound",
        25470,
        Some(d.sip),
        &["-s", "nobody"],
    );
    assert!(caller.succeeded(SECS), "{}", d.log());
}

#[test]
fn reinvite_is_relayed_both_ways() {
    let d = Drongo::start(25560, "");
    register(&d, "bob", 25580);
    let (caller, callee) = call(&d, "bob", "uas_reinvite", 25580, "uac_reinvite", 25570, &[]);
    assert!(caller && callee, "{}", d.log());
    assert_eq!(d.metric("drongo_active_dialogs"), 0);
}

#[test]
fn unacked_2xx_is_retransmitted_then_both_legs_get_bye() {
    // T1 = 100 ms: Drongo gives up 64·T1 = 6.4 s after the 200.
    let d = Drongo::start(25660, "[timers]\nt1 = 100\nt2 = 4000\nt4 = 5000\n");
    register(&d, "bob", 25680);
    let (caller, callee) = call(&d, "bob", "uas", 25680, "uac_noack", 25670, &[]);
    assert!(caller && callee, "{}", d.log());
    assert!(
        d.metric("drongo_messages_out_total{type=\"200\"}") >= 5,
        "200 retransmitted"
    );
    assert_eq!(d.metric("drongo_active_dialogs"), 0);
}

#[test]
fn confirmed_call_survives_kill_9_and_restart() {
    let mut d = Drongo::start(25760, "");
    register(&d, "bob", 25780);
    let callee = sipp(&d.dir, "uas", 25780, None, &[]);
    std::thread::sleep(Duration::from_millis(200));
    // The caller holds the call for 4 s, then sends BYE to a node that was restarted.
    let caller = sipp(
        &d.dir,
        "uac",
        25770,
        Some(d.sip),
        &["-s", "bob", "-d", "4000"],
    );
    let start = Instant::now();
    while d.metric("drongo_calls_answered_total") == 0 {
        assert!(start.elapsed() < SECS, "call not answered\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    d.spawn();
    assert_eq!(d.metric("drongo_active_dialogs"), 1, "call reloaded");
    assert_eq!(d.metric("drongo_registrations"), 1, "registration reloaded");
    assert!(
        caller.succeeded(SECS),
        "caller's BYE after restart\n{}",
        d.log()
    );
    assert!(
        callee.succeeded(SECS),
        "callee got BYE after restart\n{}",
        d.log()
    );
    assert_eq!(d.metric("drongo_active_dialogs"), 0);
}

#[test]
fn bad_input_is_answered_or_dropped_and_counted() {
    use std::net::UdpSocket;
    let d = Drongo::start(25860, "[limits]\nmax_message_size = 4096\n");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let target = ("127.0.0.1", d.sip);
    // Garbage, and a flood of it from one source.
    for i in 0..2000u32 {
        udp.send_to(format!("\u{1}garbage {i}\r\n\r\n").as_bytes(), target)
            .unwrap();
    }
    // A request missing Call-ID is answered 400.
    let bad = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKq\r\n\
               Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n\
               CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    udp.send_to(bad.as_bytes(), target).unwrap();
    let mut buf = [0u8; 4096];
    let n = recv(&udp, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 400 Missing Call-ID"));
    // Oversize datagram: 513.
    let big = format!(
        "MESSAGE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKw\r\n\
         Content-Length: 5000\r\n\r\n{}",
        "x".repeat(5000)
    );
    udp.send_to(big.as_bytes(), target).unwrap();
    let n = recv(&udp, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 513"));
    // TCP: half a message then silence, then an oversize frame that closes the connection.
    let mut half = TcpStream::connect(target).unwrap();
    half.write_all(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4")
        .unwrap();
    let mut huge = TcpStream::connect(target).unwrap();
    huge.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt\r\nContent-Length: 99999\r\n\r\n")
        .unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answer = String::new();
    let _ = huge.read_to_string(&mut answer);
    assert!(answer.starts_with("SIP/2.0 513"), "{answer:?}");
    // Still alive, and it counted what it refused.
    std::thread::sleep(Duration::from_millis(300));
    let metrics = d.http("/metrics").expect("alive");
    let garbage: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("drongo_parse_errors_total{kind=\"Malformed Start Line\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert_eq!(garbage, 2000, "{metrics}");
    drop(half);
}

#[test]
fn caller_over_tcp() {
    let d = Drongo::start(25960, "");
    register(&d, "bob", 25980);
    let (caller, callee) = call(
        &d,
        "bob",
        "uas",
        25980,
        "uac",
        25970,
        &["-t", "t1", "-d", "200"],
    );
    assert!(caller && callee, "{}", d.log());
    assert_eq!(d.metric("drongo_calls_answered_total"), 1);
    assert_eq!(d.metric("drongo_active_dialogs"), 0);
}

/// A bare UDP user agent on an ephemeral loopback port, for tests that need to hold a
/// transaction open or read exactly what Drongo sent.
struct RawUa {
    sock: std::net::UdpSocket,
    port: u16,
}

impl RawUa {
    fn new() -> RawUa {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let port = sock.local_addr().unwrap().port();
        RawUa { sock, port }
    }

    fn send(&self, d: &Drongo, text: &str) {
        self.sock
            .send_to(text.replace('\n', "\r\n").as_bytes(), ("127.0.0.1", d.sip))
            .unwrap();
    }

    /// The next message whose first line starts with `start`, skipping others.
    fn recv(&self, start: &str) -> String {
        let mut buf = [0u8; 8192];
        loop {
            let n = recv(&self.sock, &mut buf).expect("nothing came");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.starts_with(start) {
                return text;
            }
        }
    }

    /// Registers `user` with this UA's address as its contact.
    fn register(&self, d: &Drongo, user: &str) {
        let p = self.port;
        self.send(
            d,
            &format!(
                "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKr{p}\n\
                 Max-Forwards: 70\nFrom: <sip:{user}@127.0.0.1>;tag=r{p}\nTo: <sip:{user}@127.0.0.1>\n\
                 Call-ID: reg{p}\nCSeq: 1 REGISTER\nContact: <sip:{user}@127.0.0.1:{p}>\n\
                 Expires: 600\nContent-Length: 0\n\n"
            ),
        );
        self.recv("SIP/2.0 200");
    }

    /// Sends an INVITE to `user` with Call-ID `call_id`.
    fn invite(&self, d: &Drongo, user: &str, call_id: &str) {
        let p = self.port;
        self.send(
            d,
            &format!(
                "INVITE sip:{user}@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK{call_id}\n\
                 Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=a{p}\nTo: <sip:{user}@127.0.0.1>\n\
                 Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:a@127.0.0.1:{p}>\nContent-Length: 0\n\n"
            ),
        );
    }
}

/// The value of header `name` in message `text`.
fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn advertised_address_goes_on_the_wire_not_the_bound_one() {
    let d = Drongo::start_with(26160, "", &["--advertise", "127.0.0.1:26199"]);
    let (alice, bob) = (RawUa::new(), RawUa::new());
    bob.register(&d, "bob");
    alice.invite(&d, "bob", "adv1");
    let invite = bob.recv("INVITE ");
    assert!(
        header(&invite, "Via").starts_with("SIP/2.0/UDP 127.0.0.1:26199;"),
        "{invite}"
    );
    // The user part is the node token (node 1, incarnation 0, the call: its B-leg Call-ID).
    let token = format!("drongo.1.0.{}", header(&invite, "Call-ID"));
    assert_eq!(
        header(&invite, "Contact"),
        format!("<sip:{token}@127.0.0.1:26199>")
    );
    assert!(
        !invite.contains(":26160"),
        "the bound address leaked: {invite}"
    );
}

#[test]
fn idle_node_exits_at_once_on_sigterm_and_healthz_says_draining_while_busy() {
    // An idle node (one OPTIONS answered) exits at once: its finished transaction only
    // absorbs retransmissions, which is no reason to stay.
    let mut d = Drongo::start(26260, "");
    let ua = RawUa::new();
    ua.send(
        &d,
        &format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKo1\n\
             Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: o1\n\
             CSeq: 1 OPTIONS\nContent-Length: 0\n\n",
            ua.port
        ),
    );
    ua.recv("SIP/2.0 200");
    d.signal("-TERM");
    let status = d.exit_within(Duration::from_secs(2));
    assert!(
        status.is_some_and(|s| s.success()),
        "an idle node did not exit within 2 s\n{}",
        d.log()
    );

    // A busy node (an INVITE its callee never answers) drains: /healthz says so, and a
    // second signal ends it at once.
    let mut d = Drongo::start(26360, "");
    let (alice, bob) = (RawUa::new(), RawUa::new());
    bob.register(&d, "bob");
    alice.invite(&d, "bob", "busy1");
    bob.recv("INVITE ");
    d.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    let health = d.http_raw("/healthz").unwrap_or_default();
    assert!(
        health.starts_with("HTTP/1.0 503") && health.ends_with("draining\n"),
        "{health}"
    );
    assert!(d.exit_within(Duration::from_millis(500)).is_none());
    d.signal("-INT");
    let status = d.exit_within(Duration::from_secs(1));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second signal did not end the drain at once\n{}",
        d.log()
    );
}

#[test]
fn sigterm_drains_and_flushes() {
    // T1 = 100 ms: the INVITE the drain waits for times out (Timer B) after 6.4 s.
    let mut d = Drongo::start(26060, "[timers]\nt1 = 100\nt2 = 4000\nt4 = 5000\n");
    let (alice, bob, carol) = (RawUa::new(), RawUa::new(), RawUa::new());
    bob.register(&d, "bob");
    alice.invite(&d, "bob", "drain0");
    bob.recv("INVITE ");
    d.signal("-TERM");
    // While draining, a new call is refused with 503.
    std::thread::sleep(Duration::from_millis(300));
    carol.invite(&d, "bob", "drain1");
    carol.recv("SIP/2.0 503");
    // The pending call ends (408 from Timer B), then the node exits by itself, status 0.
    let start = Instant::now();
    let status = d.exit_within(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{}", d.log());
    assert!(
        start.elapsed() > Duration::from_secs(3),
        "left before its call ended"
    );
    alice.recv("SIP/2.0 408");
    assert!(d.log().contains("drained; state flushed"));
    d.spawn();
    assert_eq!(
        d.metric("drongo_registrations"),
        1,
        "registration flushed and reloaded"
    );
}

/// `recv`, again when a signal interrupted it (the tests' child processes exit at any
/// time, and SIGCHLD can cut a blocking read short: EINTR is not an answer).
fn recv(sock: &std::net::UdpSocket, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
