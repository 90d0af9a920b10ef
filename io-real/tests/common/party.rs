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
