//! The balancer's routing decision on arbitrary bytes: never panics, and what it sends for
//! a message that parsed parses too (a request it forwards carries one Via more than it
//! came with, or as many when it relays a member's own, a response one less, or the same
//! bytes when it goes to a node), from a datagram or a connection.
#![no_main]

use drongo_core::cluster::MemberState;
use drongo_core::lb::{Affinity, Balancer, HealthConfig, Pool, Source};
use drongo_core::message::{parse_datagram, Limits, SipMessage};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let mut pool = Pool::new(HealthConfig::default(), knobs & 1 == 0);
    for id in 1..=3u16 {
        let state = if knobs & 2 != 0 && id == 2 {
            MemberState::Draining
        } else {
            MemberState::Active
        };
        pool.upsert(id, SocketAddr::from(([127, 0, 0, 1], 5060 + id)), 1, state, 0, 0);
    }
    if knobs & 4 != 0 {
        pool.remove(1);
    }
    let affinity = Affinity {
        methods: vec!["REGISTER".into()],
        prefixes: vec!["10.0.0.0/8".into()],
    };
    let me = SocketAddr::from(([127, 0, 0, 1], 5060));
    let mut b = Balancer::new(me, pool, affinity, Limits::default());
    let from = SocketAddr::from(([10, 0, 0, knobs], 40000));
    let now = u64::from(knobs) * 1000;
    let limits = Limits::default();
    let vias = |m: &SipMessage| m.headers().count("Via");
    let before = parse_datagram(bytes, &limits).ok();
    // A datagram, or a message on a connection (a phone on TCP, TLS or WebSocket: the
    // balancer records routes and paths through itself), pinned by a cookie or not.
    let src = if knobs & 8 != 0 {
        let pin = (knobs & 16 != 0).then_some(u16::from(knobs % 4));
        Source::connection(from, pin)
    } else {
        Source::datagram(from)
    };
    if let Some(out) = b.handle(bytes, src, now) {
        // An answer to what did not parse copies what it can of it (as a node's does):
        // it need not parse. What the balancer forwards or answers to a parsed message must.
        if let Some(before) = before {
            let after =
                parse_datagram(&out.bytes, &limits).expect("what the balancer sends parses");
            let (n, m) = (vias(&before), vias(&after));
            match (&before, &after) {
                // One Via more from a phone; a member's own request relayed as it came.
                (SipMessage::Request(_), SipMessage::Request(_)) => assert!(m == n + 1 || m == n),
                (SipMessage::Response(_), SipMessage::Response(_)) => {
                    assert!(out.bytes == bytes || m + 1 == n)
                }
                _ => {}
            }
        }
    }
    // Probes never panic either.
    let Balancer { pool, probes, .. } = &mut b;
    while probes.poll(pool, me, now).is_some() {}
    probes.handle_timeout(pool, now + 5_000);
});
