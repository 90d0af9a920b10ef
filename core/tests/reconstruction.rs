//! Reconstruction equivalence: for random sequences of inputs, snapshot every transaction at
//! a random point, serialize, restore into a fresh layer, and the rest of the run (every
//! transmit, event and deadline) is identical to the uninterrupted run.

use drongo_core::message::{parse_datagram, response_to, Limits, Request, SipMessage};
use drongo_core::transaction::{
    Peer, Snapshot, TimerConfig, Transaction, TransactionLayer, Transport, TxKey,
};
use drongo_core::UnixMillis;
use proptest::prelude::*;

const T0: UnixMillis = 1_700_000_000_000;
const METHODS: [&str; 4] = ["INVITE", "OPTIONS", "BYE", "REGISTER"];
const CODES: [u16; 8] = [100, 180, 183, 200, 202, 404, 486, 503];

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    SendRequest { method: usize, tcp: bool },
    IncomingRequest { method: usize, tcp: bool },
    RetransmitIncoming(usize),
    AckIncoming(usize),
    Respond { server: usize, code: usize },
    ResponseArrives { client: usize, code: usize },
    TransportError { client: bool, idx: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..40_000).prop_map(Op::Advance),
        2 => (0..4usize, any::<bool>()).prop_map(|(method, tcp)| Op::SendRequest { method, tcp }),
        2 => (0..4usize, any::<bool>()).prop_map(|(method, tcp)| Op::IncomingRequest { method, tcp }),
        1 => (0..8usize).prop_map(Op::RetransmitIncoming),
        1 => (0..8usize).prop_map(Op::AckIncoming),
        3 => (0..8usize, 0..8usize).prop_map(|(server, code)| Op::Respond { server, code }),
        3 => (0..8usize, 0..8usize).prop_map(|(client, code)| Op::ResponseArrives { client, code }),
        1 => (any::<bool>(), 0..8usize).prop_map(|(client, idx)| Op::TransportError { client, idx }),
    ]
}

fn request(method: &str, branch: &str) -> Request {
    let text = format!(
        "{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: {branch}@x\r\nCSeq: 1 {method}\r\n\r\n"
    );
    match parse_datagram(text.as_bytes(), &Limits::default()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn peer(tcp: bool) -> Peer {
    Peer {
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

/// The driver's own state (what an I/O loop would know), carried across the restore.
#[derive(Default, Clone)]
struct Driver {
    now: UnixMillis,
    counter: usize,
    clients: Vec<TxKey>,
    incoming: Vec<(Request, bool)>,
    log: Vec<String>,
}

impl Driver {
    fn drain(&mut self, l: &mut TransactionLayer) {
        while let Some(t) = l.poll_transmit() {
            self.log.push(format!(
                "{} send {:?} {}",
                self.now - T0,
                t.to.transport,
                String::from_utf8_lossy(&t.bytes)
            ));
        }
        while let Some(e) = l.poll_event() {
            self.log.push(format!("{} event {e:?}", self.now - T0));
        }
        self.log
            .push(format!("{} next {:?}", self.now - T0, l.poll_timeout()));
    }

    /// Fires every deadline up to `until` at its exact time, as an I/O loop would.
    fn advance(&mut self, l: &mut TransactionLayer, until: UnixMillis) {
        while let Some(at) = l.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(at);
            l.handle_timeout(self.now);
            self.drain(l);
        }
        self.now = until;
    }

    fn apply(&mut self, l: &mut TransactionLayer, op: &Op) {
        match op {
            Op::Advance(d) => {
                let until = self.now + d;
                self.advance(l, until);
                return;
            }
            Op::SendRequest { method, tcp } => {
                self.counter += 1;
                let req = request(METHODS[*method], &format!("z9hG4bKc{}", self.counter));
                if let Ok(k) = l.send_request(req, peer(*tcp), self.now) {
                    self.clients.push(k);
                }
            }
            Op::IncomingRequest { method, tcp } => {
                self.counter += 1;
                let req = request(METHODS[*method], &format!("z9hG4bKs{}", self.counter));
                self.incoming.push((req.clone(), *tcp));
                l.handle_message(SipMessage::Request(req), peer(*tcp), self.now);
            }
            Op::RetransmitIncoming(i) => {
                if let Some((req, tcp)) = self.incoming.get(i % self.incoming.len().max(1)) {
                    l.handle_message(SipMessage::Request(req.clone()), peer(*tcp), self.now);
                }
            }
            Op::AckIncoming(i) => {
                if let Some((req, tcp)) = self.incoming.get(i % self.incoming.len().max(1)) {
                    let mut ack = req.clone();
                    ack.method = drongo_core::message::Method::Ack;
                    ack.headers.set("CSeq", "1 ACK");
                    l.handle_message(SipMessage::Request(ack), peer(*tcp), self.now);
                }
            }
            Op::Respond { server, code } => {
                if let Some((req, _)) = self.incoming.get(server % self.incoming.len().max(1)) {
                    let key = TxKey::for_request(req).unwrap();
                    let resp = response_to(req, CODES[*code], None, "srv");
                    let r = l.send_response(&key, resp, self.now);
                    self.log.push(format!("{} respond {r:?}", self.now - T0));
                }
            }
            Op::ResponseArrives { client, code } => {
                if let Some(key) = self.clients.get(client % self.clients.len().max(1)) {
                    let req = match l.get(key) {
                        Some(Transaction::ClientInvite(t)) => t.request.clone(),
                        Some(Transaction::ClientNonInvite(t)) => t.request.clone(),
                        _ => return self.drain(l),
                    };
                    let resp = response_to(&req, CODES[*code], None, "uas");
                    l.handle_message(SipMessage::Response(resp), peer(false), self.now);
                }
            }
            Op::TransportError { client, idx } => {
                let key = if *client {
                    self.clients.get(idx % self.clients.len().max(1)).cloned()
                } else {
                    self.incoming
                        .get(idx % self.incoming.len().max(1))
                        .and_then(|(r, _)| TxKey::for_request(r))
                };
                if let Some(k) = key {
                    l.handle_transport_error(&k, self.now);
                }
            }
        }
        self.drain(l);
        // Like an I/O loop: after an input, fire whatever is already due.
        let now = self.now;
        self.advance(l, now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn restored_run_is_identical(ops in prop::collection::vec(op(), 1..60), cut in 0usize..60) {
        let cut = cut % (ops.len() + 1);
        let cfg = TimerConfig::default();

        let mut whole = Driver { now: T0, ..Driver::default() };
        let mut layer = TransactionLayer::new(cfg);
        for op in &ops {
            whole.apply(&mut layer, op);
        }
        whole.advance(&mut layer, whole.now + 200_000);

        let mut split = Driver { now: T0, ..Driver::default() };
        let mut first = TransactionLayer::new(cfg);
        for op in &ops[..cut] {
            split.apply(&mut first, op);
        }
        let json = serde_json::to_string(&first.snapshots()).unwrap();
        drop(first);
        let snaps: Vec<Snapshot> = serde_json::from_str(&json).unwrap();
        let before = split.log.len();
        let mut second = TransactionLayer::new(cfg);
        second.restore(snaps, split.now);
        split.drain(&mut second);
        // Restoring produces no output, only the same next deadline as before the cut.
        let after: Vec<String> = split.log.drain(before..).collect();
        let expected_next = format!("{} next {:?}", split.now - T0, second.poll_timeout());
        prop_assert_eq!(after, vec![expected_next]);
        for op in &ops[cut..] {
            split.apply(&mut second, op);
        }
        split.advance(&mut second, whole.now);
        prop_assert_eq!(&whole.log, &split.log);
        prop_assert!(second.is_empty() || second.iter().all(|(_, t)| t.awaits_tu()));
    }
}
