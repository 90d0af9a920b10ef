//! Helpers shared by the node's end-to-end tests: a node in virtual time, a store applied
//! as the runtime would, and the SIP messages of a caller (A) and a callee (B).
#![allow(dead_code)]

pub mod cluster;

pub use drongo_core::config::Config;
pub use drongo_core::message::{parse_datagram, Limits, SipMessage};
pub use drongo_core::node::{Batch, Input, Node, WriteError};
pub use drongo_core::store::{StoreWrite, StoredRecord};
pub use drongo_core::transaction::{Peer, Transport};
pub use std::collections::BTreeMap;

pub const T0: u64 = 1_700_000_000_000;
pub const A: &str = "127.0.0.1:5061";
pub const B: &str = "127.0.0.1:5062";

pub fn peer(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    }
}

pub fn node(cfg: Config) -> Node {
    Node::new(cfg, "127.0.0.1:5060".parse().unwrap(), 1, 9)
}

/// A new process (default config, id seed `seed`) on the same store, restored at `now`.
pub fn restarted(store: &BTreeMap<String, StoredRecord>, seed: u64, now: u64) -> Node {
    let mut n = Node::new(
        Config::default(),
        "127.0.0.1:5060".parse().unwrap(),
        1,
        seed,
    );
    let records: Vec<StoredRecord> = store.values().cloned().collect();
    n.restore(&records, now);
    n
}

/// Call records in the store that are calls, not tombstones of ended calls.
pub fn calls_left(store: &BTreeMap<String, StoredRecord>) -> usize {
    store
        .iter()
        .filter(|(k, r)| {
            k.starts_with("call/") && !String::from_utf8_lossy(&r.value).contains("\"ended\":true")
        })
        .count()
}

/// Applies one write to an in-memory store as a compare-and-swap that must succeed (a
/// fenced one as if its term were current).
pub fn commit(store: &mut BTreeMap<String, StoredRecord>, w: StoreWrite) {
    let (key, expect) = match w.unfenced() {
        StoreWrite::Put { key, expect, .. } => (key.clone(), *expect),
        StoreWrite::Delete { key, expect } => (key.clone(), Some(*expect)),
        StoreWrite::Fenced { .. } => unreachable!("unfenced"),
    };
    assert_eq!(store.get(&key).map(|r| r.version), expect, "CAS on {key}");
    match w.into_record() {
        Some(r) => store.insert(key, r),
        None => store.remove(&key),
    };
}

/// Applies writes to an in-memory store, as the runtime would, and returns the transmits
/// as (destination, parsed message).
pub fn run(n: &mut Node, store: &mut BTreeMap<String, StoredRecord>) -> Vec<(String, SipMessage)> {
    run_noting(n, store).0
}

/// A write's key and the leader's term it is fenced by.
pub type Written = (String, Option<u64>);

/// [`run`], also giving what it wrote.
pub fn run_noting(
    n: &mut Node,
    store: &mut BTreeMap<String, StoredRecord>,
) -> (Vec<(String, SipMessage)>, Vec<Written>) {
    let mut out = Vec::new();
    let mut written = Vec::new();
    while let Some(Batch {
        id,
        writes,
        transmits,
        report,
        ..
    }) = n.poll_batch()
    {
        let committed = report;
        for w in writes {
            written.push((w.key().to_string(), w.fence()));
            commit(store, w);
        }
        if committed {
            n.handle_committed(0, &[id]);
        }
        for t in transmits {
            let msg = parse_datagram(&t.bytes, &Limits::default()).unwrap();
            out.push((t.to.addr.to_string(), msg));
        }
    }
    (out, written)
}

/// The store could not be reached for any of `batch`'s writes.
pub fn fail(n: &mut Node, now: u64, batch: &Batch) {
    let errors = (0..batch.writes.len())
        .map(|i| (i, WriteError::Unavailable))
        .collect();
    n.handle_input(
        now,
        Input::CommitFailed {
            id: batch.id,
            errors,
        },
    );
}

pub fn first_line(m: &SipMessage) -> String {
    match m {
        SipMessage::Request(r) => format!("{} {}", r.method, r.uri),
        SipMessage::Response(r) => format!("{} {}", r.code, r.reason),
    }
}

pub fn lines(out: &[(String, SipMessage)]) -> Vec<String> {
    out.iter()
        .map(|(to, m)| format!("{to} {}", first_line(m)))
        .collect()
}

/// `line` ("destination first-line") is among the `lines` sent.
pub fn assert_sent(lines: &[String], line: &str) {
    assert!(lines.iter().any(|l| l == line), "{line} not in {lines:?}");
}

pub fn send(n: &mut Node, now: u64, from: &str, text: &str) {
    n.handle_datagram(now, peer(from), text.replace('\n', "\r\n").as_bytes());
}

/// The response a peer answers `r` with: `status` ("200 OK"), its To tag added when `r`
/// had none, and a Contact (harmless where none is needed).
pub fn reply(r: &drongo_core::message::Request, status: &str) -> String {
    let h = &r.headers;
    let to = h.get("To").unwrap();
    let tag = if to.contains(";tag=") { "" } else { ";tag=bt" };
    format!(
        "SIP/2.0 {status}\nVia: {}\nFrom: {}\nTo: {to}{tag}\nCall-ID: {}\nCSeq: {}\n\
         Contact: <sip:bob@127.0.0.1:5062>\nContent-Length: 0\n\n",
        h.get("Via").unwrap(),
        h.get("From").unwrap(),
        h.get("Call-ID").unwrap(),
        h.get("CSeq").unwrap()
    )
}

pub fn ok_for(r: &drongo_core::message::Request) -> String {
    reply(r, "200 OK")
}

/// A request from the callee in its dialog with Drongo (whose INVITE was `b_inv`).
pub fn from_b(
    b_inv: &drongo_core::message::Request,
    method: &str,
    cseq: u32,
    branch: &str,
) -> String {
    let h = &b_inv.headers;
    format!(
        "{method} sip:drongo@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}\n\
         Max-Forwards: 70\nFrom: {};tag=bt\nTo: {}\nCall-ID: {}\nCSeq: {cseq} {method}\n\
         Contact: <sip:bob@127.0.0.1:5062>\nContent-Length: 0\n\n",
        h.get("To").unwrap(),
        h.get("From").unwrap(),
        h.get("Call-ID").unwrap()
    )
}

/// A request from the caller in its dialog, made from its ACK: `method`, `cseq`, `branch`.
pub fn from_a(
    ok: &drongo_core::message::Response,
    method: &str,
    cseq: u32,
    branch: &str,
) -> String {
    ack_from_a(ok)
        .replace("ACK sip", &format!("{method} sip"))
        .replace("CSeq: 1 ACK", &format!("CSeq: {cseq} {method}"))
        .replace("z9hG4bKa2", branch)
}

/// Each peer that got a BYE in `out` answers it 200; returns what follows.
pub fn answer_byes(
    n: &mut Node,
    store: &mut BTreeMap<String, StoredRecord>,
    out: &[(String, SipMessage)],
    now: u64,
) -> Vec<(String, SipMessage)> {
    for (to, m) in out {
        match m {
            SipMessage::Request(r) if r.method.as_str() == "BYE" => send(n, now, to, &ok_for(r)),
            _ => {}
        }
    }
    run(n, store)
}

/// Bob registers his contact at 127.0.0.1:5062.
pub const REGISTER_BOB: &str = "REGISTER sip:127.0.0.1 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKr1\nMax-Forwards: 70\n\
From: <sip:bob@127.0.0.1>;tag=r\nTo: <sip:bob@127.0.0.1>\nCall-ID: reg1\nCSeq: 1 REGISTER\n\
Contact: <sip:bob@127.0.0.1:5062>\nExpires: 600\nContent-Length: 0\n\n";

pub fn register_bob(n: &mut Node, store: &mut BTreeMap<String, StoredRecord>) {
    send(n, T0, B, REGISTER_BOB);
    let out = run(n, store);
    assert_eq!(lines(&out), ["127.0.0.1:5062 200 OK"]);
    assert!(store.contains_key("reg/bob"));
}

pub const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa1\nMax-Forwards: 70\n\
From: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:bob@127.0.0.1>\nCall-ID: callA\n\
CSeq: 1 INVITE\nContact: <sip:alice@127.0.0.1:5061>\nContent-Type: application/sdp\n\
Content-Length: 5\n\nv=0\n";

/// A request of the caller's INVITE transaction hop by hop: `method` (CANCEL, or ACK of a
/// failure) with the INVITE's Request-URI, Via, tags and CSeq number, and no body.
pub fn of_invite(method: &str) -> String {
    INVITE
        .replace(
            "INVITE sip:bob@127.0.0.1 SIP/2.0",
            &format!("{method} sip:bob@127.0.0.1 SIP/2.0"),
        )
        .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"))
        .replace("Content-Type: application/sdp\n", "")
        .replace("Content-Length: 5\n\nv=0\n", "Content-Length: 0\n\n")
}

/// Tells `n` at `now` that members 1 and 2 (incarnation 1) are live and where members
/// reach them: 127.0.0.1:5060 and 127.0.0.1:5070.
pub fn know_members_1_and_2(n: &mut Node, now: u64) {
    n.handle_input(
        now,
        Input::Members {
            incarnation: 1,
            members: vec![(1, 1), (2, 1)],
            draining: vec![],
            addresses: vec![
                (1, "127.0.0.1:5060".parse().unwrap()),
                (2, "127.0.0.1:5070".parse().unwrap()),
            ],
        },
    );
}

/// Gives `n` at `now` every call record of `store` as its standby watch would.
pub fn watch_calls(n: &mut Node, store: &Store, now: u64) {
    for r in scan(store, "call/") {
        let key = r.key.clone();
        n.handle_input(
            now,
            Input::Watched {
                key,
                record: Some(r),
            },
        );
    }
}

/// Sets up a confirmed call; returns the B-leg INVITE and the 200 the caller got.
pub fn confirmed_call(
    n: &mut Node,
    store: &mut BTreeMap<String, StoredRecord>,
) -> (
    drongo_core::message::Request,
    drongo_core::message::Response,
) {
    register_bob(n, store);
    send(n, T0 + 10, A, INVITE);
    let out = run(n, store);
    assert_eq!(
        lines(&out),
        [
            "127.0.0.1:5062 INVITE sip:bob@127.0.0.1:5062",
            "127.0.0.1:5061 100 Trying"
        ]
    );
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!()
    };
    assert_eq!(b_inv.body, b"v=0\r\n");
    send(n, T0 + 20, B, &reply(&b_inv, "180 Ringing"));
    assert_eq!(lines(&run(n, store)), ["127.0.0.1:5061 180 Ringing"]);
    send(n, T0 + 30, B, &reply(&b_inv, "200 OK"));
    // The call record is written in the same batch as, and so before, the 200.
    let batch = n.poll_batch().unwrap();
    // (In a cluster the A-leg index `leg/` and the owner index `owns/` go with it.)
    let puts: Vec<&str> = batch.writes.iter().map(StoreWrite::key).collect();
    assert!(puts.iter().any(|k| k.starts_with("call/")), "{puts:?}");
    let indexes = ["call/", "leg/", "owns/"];
    assert!(puts
        .iter()
        .all(|k| indexes.iter().any(|p| k.starts_with(p))));
    let mut out = Vec::new();
    for t in &batch.transmits {
        out.push((
            t.to.addr.to_string(),
            parse_datagram(&t.bytes, &Limits::default()).unwrap(),
        ));
    }
    n.handle_committed(0, &[batch.id]);
    for w in batch.writes {
        commit(store, w);
    }
    assert_eq!(
        lines(&out),
        [
            "127.0.0.1:5062 ACK sip:bob@127.0.0.1:5062",
            "127.0.0.1:5061 200 OK"
        ]
    );
    let SipMessage::Response(ok) = out[1].1.clone() else {
        panic!()
    };
    (b_inv, ok)
}

pub type Store = BTreeMap<String, StoredRecord>;

/// A confirmed call whose 200 the caller has ACKed: the node, its store, the B-leg INVITE
/// and the caller's 200.
pub fn acked_call() -> (
    Node,
    Store,
    drongo_core::message::Request,
    drongo_core::message::Response,
) {
    let mut n = node(Config::default());
    let mut store = BTreeMap::new();
    let (b_inv, ok) = confirmed_call(&mut n, &mut store);
    send(&mut n, T0 + 40, A, &ack_from_a(&ok));
    run(&mut n, &mut store);
    (n, store, b_inv, ok)
}

/// The caller's re-INVITE (CSeq 2) in the dialog of the 200 `ok`.
pub fn reinvite_from_a(ok: &drongo_core::message::Response) -> String {
    ack_from_a(ok)
        .replace("ACK sip", "INVITE sip")
        .replace(
            "CSeq: 1 ACK",
            "CSeq: 2 INVITE\nContact: <sip:alice@127.0.0.1:5061>",
        )
        .replace("z9hG4bKa2", "z9hG4bKa3")
}

/// Sends `reinvite` from the caller at T0 + 50; returns the request relayed to the callee.
pub fn relayed_reinvite(
    n: &mut Node,
    store: &mut Store,
    reinvite: &str,
) -> drongo_core::message::Request {
    send(n, T0 + 50, A, reinvite);
    let out = run(n, store);
    match out[0].1.clone() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("{:?}", lines(&out)),
    }
}

pub fn ack_from_a(ok: &drongo_core::message::Response) -> String {
    format!(
        "ACK sip:drongo@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa2\n\
         Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: {}\nCall-ID: callA\n\
         CSeq: 1 ACK\nContent-Length: 0\n\n",
        ok.headers.get("To").unwrap()
    )
}

/// The records of `store` under `prefix`.
pub fn scan(store: &Store, prefix: &str) -> Vec<StoredRecord> {
    store
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, r)| r.clone())
        .collect()
}

/// Answers every owner-index scan the node asks for from `store`.
pub fn scan_all(n: &mut Node, store: &Store, now: u64) {
    while let Some(prefix) = n.poll_scan() {
        let records = Some(scan(store, &prefix));
        n.handle_input(now, Input::Scanned { prefix, records });
    }
}

/// Answers every read the node asks for from `store`; returns the keys read.
pub fn load_all(n: &mut Node, store: &Store, now: u64) -> Vec<String> {
    let mut keys = Vec::new();
    while let Some(key) = n.poll_load() {
        keys.push(key.clone());
        let record = Some(store.get(&key).cloned());
        n.handle_input(now, Input::Loaded { key, record });
    }
    keys
}

/// Call `i` on `n` (bob registered), up and acknowledged: the caller's INVITE (Call-ID
/// `call{i}`) at T0 + 10, bob's 200 at T0 + 20, the caller's ACK at T0 + 30, each applied
/// to `store`. The 200 the caller got.
pub fn numbered_call(n: &mut Node, store: &mut Store, i: usize) -> drongo_core::message::Response {
    let invite = INVITE
        .replace("callA", &format!("call{i}"))
        .replace("z9hG4bKa1", &format!("z9hG4bKinv{i}"));
    send(n, T0 + 10, A, &invite);
    let out = run(n, store);
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!("{:?}", lines(&out))
    };
    send(n, T0 + 20, B, &reply(&b_inv, "200 OK"));
    let out = run(n, store);
    let ok = out
        .iter()
        .find_map(|(_, m)| match m {
            SipMessage::Response(r) if r.code == 200 => Some(r.clone()),
            _ => None,
        })
        .expect("the caller's 200");
    let ack = ack_from_a(&ok)
        .replace("callA", &format!("call{i}"))
        .replace("z9hG4bKa2", &format!("z9hG4bKack{i}"));
    send(n, T0 + 30, A, &ack);
    run(n, store);
    ok
}
