//! Arbitrary sequences of messages, commands and time steps against the transaction layer:
//! no panic, deadlines never in the past after `handle_timeout`, and no transaction lives
//! past its last timer (only those waiting on the TU may remain once time has run out).
#![no_main]

use drongo_core::message::{parse_and_validate, response_to, Limits, SipMessage};
use drongo_core::transaction::{Peer, TimerConfig, TransactionLayer, Transport, TxKey};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Advance(u16),
    /// Raw bytes from the network.
    Raw(Vec<u8>, bool),
    /// A well-formed request or response built from a template, so deep states are reached.
    Incoming { method: u8, branch: u8, code: u16, is_response: bool, tcp: bool },
    Send { method: u8, branch: u8, tcp: bool },
    Respond { branch: u8, method: u8, code: u16 },
    TransportError { branch: u8, method: u8, server: bool },
}

const METHODS: [&str; 6] = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"];

fn template(method: &str, branch: u8) -> Vec<u8> {
    format!(
        "{method} sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=f\r\nTo: <sip:b@x>\r\nCall-ID: c{branch}\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn request(method: u8, branch: u8) -> drongo_core::message::Request {
    let m = METHODS[method as usize % METHODS.len()];
    match parse_and_validate(&template(m, branch), &Limits::default()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("template must be valid: {other:?}"),
    }
}

fn peer(tcp: bool) -> Peer {
    Peer {
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let limits = Limits::default();
    let mut now = 1_700_000_000_000u64;
    let step = |layer: &mut TransactionLayer, now: u64| {
        layer.handle_timeout(now);
        while layer.poll_transmit().is_some() {}
        while layer.poll_event().is_some() {}
        if let Some(t) = layer.poll_timeout() {
            assert!(t > now, "deadline {t} not in the future of {now}");
        }
    };
    for op in ops {
        match op {
            Op::Advance(ms) => now += u64::from(ms) * 10,
            Op::Raw(bytes, tcp) => {
                if let Ok(msg) = parse_and_validate(&bytes, &limits) {
                    layer.handle_message(msg, peer(tcp), now);
                }
            }
            Op::Incoming { method, branch, code, is_response, tcp } => {
                let req = request(method, branch);
                let msg = if is_response {
                    SipMessage::Response(response_to(&req, 100 + code % 600, None, "u"))
                } else {
                    SipMessage::Request(req)
                };
                layer.handle_message(msg, peer(tcp), now);
            }
            Op::Send { method, branch, tcp } => {
                let _ = layer.send_request(request(method, branch), peer(tcp), now);
            }
            Op::Respond { branch, method, code } => {
                let req = request(method, branch);
                if let Some(key) = TxKey::for_request(&req) {
                    let resp = response_to(&req, 100 + code % 600, None, "s");
                    let _ = layer.send_response(&key, resp, now);
                }
            }
            Op::TransportError { branch, method, server } => {
                let req = request(method, branch);
                let key = if server {
                    TxKey::for_request(&req)
                } else {
                    let resp = response_to(&req, 200, None, "x");
                    TxKey::for_response(&resp)
                };
                if let Some(k) = key {
                    layer.handle_transport_error(&k, now);
                }
            }
        }
        step(&mut layer, now);
    }
    // Let every timer run out: only transactions waiting on the TU may remain.
    now += 10 * 60 * 1000;
    step(&mut layer, now);
    for (key, tx) in layer.iter() {
        assert!(tx.awaits_tu(), "{key:?} outlived its timers in {}", tx.state_name());
    }
});
