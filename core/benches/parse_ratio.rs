//! Parse + validate against bare rsip, timed alternately in one process: 201 rounds, each
//! timing 2,000 messages of one parser then 2,000 of the other (the order swapping every
//! round). A shared VM's speed drifts from second to second, so two criterion runs taken
//! one after the other can disagree by ±40 %; alternating gives both the same machine.
//! Prints the median of the per-round ratios.

use drongo_core::message::{parse_and_validate, Limits};
use std::hint::black_box;
use std::time::Instant;

const INVITE: &[u8] = include_bytes!("invite.sip");
const ROUNDS: usize = 201;
const PER_ROUND: u32 = 2_000;

fn time(f: impl Fn()) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_ROUND {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(PER_ROUND)
}

fn main() {
    let limits = Limits::default();
    let rsip = || {
        black_box(rsip::SipMessage::try_from(black_box(INVITE)).is_ok());
    };
    let ours = || {
        black_box(parse_and_validate(black_box(INVITE), &limits).is_ok());
    };
    assert!(
        rsip::SipMessage::try_from(INVITE).is_ok() && parse_and_validate(INVITE, &limits).is_ok()
    );
    let mut rounds: Vec<(f64, f64)> = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (r, o) = if round % 2 == 0 {
            let r = time(rsip);
            (r, time(ours))
        } else {
            let o = time(ours);
            (time(rsip), o)
        };
        rounds.push((r, o));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = median(rounds.iter().map(|(r, o)| r / o).collect());
    let r = median(rounds.iter().map(|(r, _)| *r).collect());
    let o = median(rounds.iter().map(|(_, o)| *o).collect());
    println!(
        "alternating, median of {ROUNDS} rounds: rsip {:.2} us, drongo parse+validate {:.2} us, \
         ratio drongo/rsip (throughput) {ratio:.2}",
        r * 1e6,
        o * 1e6
    );
}
