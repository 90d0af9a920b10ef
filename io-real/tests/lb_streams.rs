//! `drongo lb` with phones on connections it terminates: two nodes on the 3-member etcd of
//! `ci/etcd.sh`, one balancer serving UDP and TCP on its SIP address, TLS, WebSocket and
//! secure WebSocket (a self-signed certificate made by `openssl`), SIPp as the far party.
//!
//! 1. SIPp calls through the balancer over TCP: its ACK and BYE follow the balancer's
//!    Record-Route on the same connection.
//! 2. Over TCP, TLS, WS and WSS a phone registers and calls (INVITE, ACK, BYE through the
//!    balancer), and is called by SIPp over UDP: the node reaches it by the Path the
//!    balancer recorded, on its connection.
//! 3. A WebSocket client gets a cookie naming its node; its REGISTERs go there; it
//!    reconnects with the cookie and lands on the same node; without it, by rendezvous.
#![cfg(feature = "etcd")]

mod common;
mod phone;

use common::lb::Lb;
use common::{finished, scenario, Drongo, Reaped};
use phone::Phone;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LB: u16 = 5800;
const TLS: u16 = 5801;
const WS: u16 = 5802;
const WSS: u16 = 5803;
const NODES: [u16; 2] = [5804, 5806];
const UAS: u16 = 5810;

fn start_lb(url: &str, dir: &Path) -> Lb {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // An end-entity certificate (webpki refuses a CA certificate as a server's).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success(), "openssl could not make a certificate");
    let cfg = format!(
        "[health]\ninterval_ms = 500\ntimeout_ms = 400\n\
         [tls]\nlisten = \"127.0.0.1:{TLS}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [websocket]\nlisten = \"127.0.0.1:{WS}\"\nsecure_listen = \"127.0.0.1:{WSS}\"\n",
        cert.display(),
        key.display()
    );
    Lb::start(LB, url, dir, &cfg, 2)
}

fn node(sip: u16, id: u16, url: &str) -> Drongo {
    common::member_behind(sip, id, url, LB, UAS, 1_000, "")
}

/// SIPp: scenario `name` from `port` to the balancer, `-m calls`, extra arguments; whether
/// it ended with every call successful within `limit`.
fn sipp(dir: &Path, name: &str, port: u16, calls: u64, extra: &[&str]) -> Child {
    Command::new("sipp")
        .args(["-sf", &scenario(name)])
        .arg(format!("127.0.0.1:{LB}"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        .args(["-m", &calls.to_string()])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join(format!("{port}-errors.log")))
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (ci/install.sh installs sip-tester)")
}

fn errors(dir: &Path, port: u16) -> String {
    std::fs::read_to_string(dir.join(format!("{port}-errors.log")))
        .unwrap_or_default()
        .lines()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn phones_on_tcp_tls_and_websockets_register_call_and_are_called() {
    let url = common::etcd_url("lb-streams");
    let dir = std::env::temp_dir().join(format!("drongo-lb-streams-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let nodes = [node(NODES[0], 1, &url), node(NODES[1], 2, &url)];
    let lb = start_lb(&url, &dir);
    let callee = Command::new("sipp")
        .args(["-sf", &scenario("uas")])
        .args(["-i", "127.0.0.1", "-p", &UAS.to_string(), "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    let _callee = Reaped(callee);
    let logs = || {
        format!(
            "lb:\n{}\nnode 1:\n{}\nnode 2:\n{}",
            std::fs::read_to_string(dir.join(format!("lb-{LB}.log"))).unwrap_or_default(),
            nodes[0].log(),
            nodes[1].log()
        )
    };

    // 1. SIPp over TCP: 20 calls, ACK and BYE routed back through the balancer.
    let uac = sipp(
        &dir,
        "uac",
        5811,
        20,
        &["-t", "t1", "-s", "bob", "-r", "10", "-d", "500"],
    );
    assert!(
        finished(uac, Duration::from_secs(30)),
        "calls over TCP failed\n{}\n{}",
        errors(&dir, 5811),
        logs()
    );
    println!(
        "20 SIPp calls over TCP through the balancer: routed {:?}",
        lb.routed::<2>()
    );

    // 2. A phone on each kind of connection registers, calls bob, and is called.
    let cert = dir.join("cert.pem");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for kind in ["tcp", "tls", "ws", "wss"] {
        let mut phone = rt.block_on(async {
            match kind {
                "tcp" => Phone::tcp(LB).await,
                "tls" => Phone::tls(TLS, &cert).await,
                "ws" => Phone::ws(WS, None, None).await,
                _ => Phone::ws(WSS, Some(&cert), None).await,
            }
        });
        let user = format!("alice-{kind}");
        let code = rt.block_on(phone.register(&user, &format!("reg-{kind}")));
        assert_eq!(code, 200, "REGISTER over {kind}\n{}", logs());
        rt.block_on(phone.call("bob", &format!("call-{kind}")))
            .unwrap_or_else(|e| panic!("call over {kind}: {e}\n{}", logs()));
        let port = 5812 + kind.len() as u16;
        let caller = sipp(&dir, "uac", port, 1, &["-s", &user, "-d", "300"]);
        let answered = rt.block_on(phone.answer(Duration::from_secs(10)));
        let done = finished(caller, Duration::from_secs(15));
        assert!(
            answered.is_ok() && done,
            "call to the phone over {kind}: {answered:?}, SIPp ok {done}\n{}\n{}",
            errors(&dir, port),
            logs()
        );
        println!("over {kind}: REGISTER 200, call out and call in completed");
    }

    // 3. The cookie: a WebSocket client's REGISTERs go to the node its cookie names, before
    // and after it reconnects with the cookie.
    let mut first = rt.block_on(Phone::ws(WS, None, None));
    let cookie = first.cookie.clone().expect("a Set-Cookie on the upgrade");
    let node: usize = cookie
        .split_once('=')
        .and_then(|(_, v)| v.parse().ok())
        .expect("the cookie names a node");
    let before = lb.routed::<2>();
    for i in 0..10 {
        assert_eq!(
            rt.block_on(first.register("carol", &format!("c1-{i}"))),
            200
        );
    }
    drop(first);
    let mut again = rt.block_on(Phone::ws(WS, None, Some(&cookie)));
    assert_eq!(
        again.cookie.as_deref(),
        Some(cookie.as_str()),
        "the same node again"
    );
    for i in 0..10 {
        assert_eq!(
            rt.block_on(again.register("carol", &format!("c2-{i}"))),
            200
        );
    }
    let after = lb.routed::<2>();
    let to: Vec<u64> = (0..2).map(|i| after[i] - before[i]).collect();
    println!("cookie {cookie}: 20 REGISTERs over two connections routed {to:?}");
    assert_eq!(to[node - 1], 20, "{to:?}");
}
