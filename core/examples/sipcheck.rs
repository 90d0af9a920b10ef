//! Reads each file as one SIP message and prints one line per file:
//! `FILE: valid request METHOD`, `FILE: valid response CODE`, or
//! `FILE: invalid CODE REASON` where CODE is the status a server would answer, or `drop`.
//!
//! Usage: `cargo run -p drongo-core --example sipcheck -- FILE...`

use drongo_core::message::{parse_and_validate, Action, Limits, SipMessage};

fn main() {
    let limits = Limits::default();
    let mut status = 0;
    for path in std::env::args().skip(1) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{path}: cannot read: {e}");
                status = 2;
                continue;
            }
        };
        match parse_and_validate(&bytes, &limits) {
            Ok(SipMessage::Request(r)) => println!("{path}: valid request {}", r.method),
            Ok(SipMessage::Response(r)) => println!("{path}: valid response {}", r.code),
            Err(rej) => match rej.action {
                Action::Reply(code) => println!("{path}: invalid {code} {}", rej.rule),
                Action::Drop => println!("{path}: invalid drop {}", rej.rule),
            },
        }
    }
    std::process::exit(status);
}
