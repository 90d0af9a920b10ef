//! The two parties of a call, as bare UDP sockets: a callee that answers everything 200,
//! and what a caller needs to build its requests (for tests that must control each
//! request, where SIPp's scenarios cannot).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn sip(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

pub fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or("")
}

/// The caller's 200 to a request from Drongo (a BYE), headers copied from it.
pub fn ok_to(request: &str) -> String {
    format!(
        "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {}\nCall-ID: {}\nCSeq: {}\nContent-Length: 0\n\n",
        header(request, "Via"),
        header(request, "From"),
        header(request, "To"),
        header(request, "Call-ID"),
        header(request, "CSeq")
    )
}

pub const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

/// What a party received: when, from which port, the first line.
pub type Heard = Arc<Mutex<Vec<(Instant, u16, String)>>>;

/// A callee that answers INVITE with 200 (with SDP) and any other request with 200, until
/// `stop`; counts the BYEs it gets in `byes` and notes every message in `heard`.
pub fn callee(
    sock: UdpSocket,
    stop: Arc<AtomicBool>,
    byes: Arc<AtomicU64>,
    heard: Heard,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut buf = [0u8; 8192];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            if let Ok(mut h) = heard.lock() {
                h.push((Instant::now(), from.port(), first));
            }
            if text.starts_with("SIP/2.0") || text.starts_with("ACK") {
                continue;
            }
            if text.starts_with("BYE") {
                byes.fetch_add(1, Ordering::Relaxed);
            }
            let invite = text.starts_with("INVITE");
            let to = header(&text, "To");
            let to = if to.contains("tag=") {
                to.to_string()
            } else {
                format!("{to};tag=callee")
            };
            let body = if invite { SDP } else { "" };
            let ctype = if invite {
                "Content-Type: application/sdp\n"
            } else {
                ""
            };
            let resp = format!(
                "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {to}\nCall-ID: {}\nCSeq: {}\n\
                 Contact: <sip:bob@127.0.0.1:{port}>\n{ctype}Content-Length: {}\n\n",
                header(&text, "Via"),
                header(&text, "From"),
                header(&text, "Call-ID"),
                header(&text, "CSeq"),
                body.len()
            );
            let mut bytes = sip(&resp);
            bytes.extend_from_slice(body.as_bytes());
            let _ = sock.send_to(&bytes, from);
        }
    })
}

/// A call set up from the caller's side: the dialog's remote target (the 200's Contact),
/// its To (with the callee's tag), and the ACK sent (to send again on a copy of the 200).
pub struct Placed {
    pub target: String,
    pub to: String,
    pub ack: String,
}

/// Places call `call_id` from `sock` (its read timeout set) through the Drongo at
/// 127.0.0.1:`port`: an INVITE with SDP to bob, its 200 awaited for up to 10 s (`log` tells
/// why it did not come), the ACK sent.
pub fn place_call(sock: &UdpSocket, port: u16, call_id: &str, log: impl Fn() -> String) -> Placed {
    let cp = sock.local_addr().unwrap().port();
    let invite = format!(
        "INVITE sip:bob@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{cp};branch=z9hG4bK{call_id}-1\n\
         Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=ca\nTo: <sip:bob@127.0.0.1>\nCall-ID: {call_id}\n\
         CSeq: 1 INVITE\nContact: <sip:a@127.0.0.1:{cp}>\nContent-Type: application/sdp\n\
         Content-Length: {}\n\n",
        SDP.len()
    );
    let mut bytes = sip(&invite);
    bytes.extend_from_slice(SDP.as_bytes());
    sock.send_to(&bytes, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 8192];
    let started = Instant::now();
    let ok = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no 200 to INVITE {call_id}\n{}",
            log()
        );
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
    };
    let to = header(&ok, "To").to_string();
    let target = header(&ok, "Contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string();
    let ack = format!(
        "ACK {target} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{cp};branch=z9hG4bK{call_id}-ack\n\
         Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=ca\nTo: {to}\nCall-ID: {call_id}\n\
         CSeq: 1 ACK\nContent-Length: 0\n\n"
    );
    sock.send_to(&sip(&ack), ("127.0.0.1", port)).unwrap();
    Placed { target, to, ack }
}

/// Calls bob through each Drongo at 127.0.0.1:`ports` (each call confirmed), with `phone`
/// answering as bob meanwhile; how many INVITEs the phone got. `tag` names the calls.
pub fn calls_reach(phone: UdpSocket, ports: &[u16], tag: &str, log: impl Fn() -> String) -> usize {
    let (stop, heard) = (Arc::new(AtomicBool::new(false)), Heard::default());
    let t = callee(
        phone,
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
        heard.clone(),
    );
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for (i, port) in ports.iter().enumerate() {
        let call_id = format!("{tag}-{}-{i}", std::process::id());
        place_call(&caller, *port, &call_id, &log);
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let heard = heard.lock().unwrap();
    heard
        .iter()
        .filter(|(_, _, l)| l.starts_with("INVITE"))
        .count()
}
