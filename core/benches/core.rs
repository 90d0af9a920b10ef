//! Parse + validate against bare rsip parsing, and a full non-INVITE transaction round,
//! in messages (or rounds) per second. `ci/bench-core.sh` prints the ratios.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use drongo_core::message::{parse_and_validate, response_to, Limits, SipMessage};
use drongo_core::transaction::{Peer, TimerConfig, TransactionLayer, Transport, TxEvent};

/// An INVITE with SDP, as in RFC 3261 §24.2.
const INVITE: &[u8] = include_bytes!("invite.sip");

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rsip", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(INVITE)).unwrap())
    });
    let limits = Limits::default();
    g.bench_function("drongo_parse_validate", |b| {
        b.iter(|| parse_and_validate(black_box(INVITE), &limits).unwrap())
    });
    g.finish();
}

/// One OPTIONS round over TCP between two layers, through the wire both ways: send, parse,
/// server transaction, TU answer, parse, client transaction, both terminated.
fn transaction_round(c: &mut Criterion) {
    let limits = Limits::default();
    let peer = Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:5060".parse().unwrap(),
    };
    let template = match parse_and_validate(
        b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK0\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: x@y\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        &limits,
    ) {
        Ok(SipMessage::Request(r)) => r,
        _ => unreachable!(),
    };
    let mut g = c.benchmark_group("transaction");
    g.throughput(Throughput::Elements(1));
    g.bench_function("non_invite_round", |b| {
        let mut client = TransactionLayer::new(TimerConfig::default());
        let mut server = TransactionLayer::new(TimerConfig::default());
        let mut n = 0u64;
        let now = 1_700_000_000_000;
        b.iter(|| {
            n += 1;
            let mut req = template.clone();
            req.headers.set(
                "Via",
                format!("SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK{n}"),
            );
            client.send_request(req, peer, now).unwrap();
            let wire = client.poll_transmit().unwrap().bytes;
            server.handle_message(parse_and_validate(&wire, &limits).unwrap(), peer, now);
            let Some(TxEvent::Request { key, request, .. }) = server.poll_event() else {
                unreachable!()
            };
            server
                .send_response(&key, response_to(&request, 200, None, "t"), now)
                .unwrap();
            server.handle_timeout(now);
            let wire = server.poll_transmit().unwrap().bytes;
            client.handle_message(parse_and_validate(&wire, &limits).unwrap(), peer, now);
            client.handle_timeout(now);
            while client.poll_event().is_some() {}
            while server.poll_event().is_some() {}
            assert!(client.is_empty() && server.is_empty());
        })
    });
    g.finish();
}

criterion_group!(benches, parsing, transaction_round);
criterion_main!(benches);
