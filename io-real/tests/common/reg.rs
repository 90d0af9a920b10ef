//! REGISTERs from a bare UDP socket, for the registrar tests.

use super::party::{header, sip};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// A UDP socket with a 50 ms read timeout.
pub fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Sends a REGISTER for `user` from `sock` (its contact: that socket; `expires ==
/// u32::MAX`: a query, no Contact) to `node` and waits for the final response; returns it.
pub fn register_user(
    sock: &UdpSocket,
    node: u16,
    user: &str,
    call_id: &str,
    cseq: u32,
    expires: u32,
) -> String {
    let port = sock.local_addr().unwrap().port();
    let contact = if expires == u32::MAX {
        String::new()
    } else {
        format!("Contact: <sip:{user}@127.0.0.1:{port}>;expires={expires}\n")
    };
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}-{cseq}\n\
         Max-Forwards: 70\nFrom: <sip:{user}@127.0.0.1>;tag=r{cseq}\nTo: <sip:{user}@127.0.0.1>\n\
         Call-ID: {call_id}\nCSeq: {cseq} REGISTER\n{contact}Content-Length: 0\n\n"
    );
    let mut buf = [0u8; 8192];
    let started = Instant::now();
    // Sent again every 500 ms, as a phone's transaction would (a 200 withdrawn after a lost
    // compare-and-swap comes with a retransmission).
    let mut next = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no answer to REGISTER"
        );
        if Instant::now() >= next {
            sock.send_to(&sip(&text), ("127.0.0.1", node)).unwrap();
            next = Instant::now() + Duration::from_millis(500);
        }
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        let resp = String::from_utf8_lossy(&buf[..n]).to_string();
        let final_ = resp.starts_with("SIP/2.0 ") && !resp.starts_with("SIP/2.0 1");
        if final_ && header(&resp, "Call-ID") == call_id {
            return resp;
        }
    }
}

/// The contacts a 200 to REGISTER lists.
pub fn contacts(resp: &str) -> Vec<String> {
    resp.lines()
        .filter_map(|l| l.strip_prefix("Contact: "))
        .map(str::to_string)
        .collect()
}
