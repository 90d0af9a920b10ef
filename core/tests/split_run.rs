//! Deterministic timer reconstruction across nodes (`transactions = "distributed"`): a
//! ringing call's run split at a random point between two nodes (node 1 runs it until it
//! dies, node 2 adopts it from the store) sends exactly what one node would have sent, at
//! the same times: the callee's INVITE retransmissions, the relayed answers, the 2xx until
//! its ACK, a CANCEL's 487, the ACKs and BYEs.
//!
//! One difference is by design: an ACK costs no write, so a final response the caller
//! acknowledged before the split (a 2xx, a 487) is still waiting for its ACK in the
//! record, and the adopter sends it once more (the caller acknowledges that copy too,
//! §13.2.2.4, §17.1.1.2). One such copy of each is allowed, and nothing else. Likewise the
//! ACK for the callee's 2xx, which left after the write that confirmed the call, maybe
//! not at all: the adopter of a call whose 2xx is in its window sends it once more, at the
//! takeover.

mod common;
use common::*;
use drongo_core::config::Transactions;
use drongo_core::message::{Request, Response};
use proptest::prelude::*;

/// What the parties do, in ms after the INVITE; `split`: when node 1 dies.
#[derive(Debug, Clone)]
struct Script {
    ringing: Option<u64>,
    /// When the callee answers, and whether 200 (else 486).
    answer: Option<(u64, bool)>,
    cancel: Option<u64>,
    /// How long the caller takes to ACK a 200 (never: the 2xx goes on until 64·T1).
    ack_after: Option<u64>,
    split: u64,
}

fn script() -> impl Strategy<Value = Script> {
    (
        proptest::option::of(0u64..4_000),
        proptest::option::of((0u64..20_000, any::<bool>())),
        proptest::option::of(0u64..30_000),
        proptest::option::weighted(0.8, 0u64..3_000),
        1u64..40_000,
    )
        .prop_map(|(ringing, answer, cancel, ack_after, split)| Script {
            ringing,
            answer: answer.map(|(at, ok)| (ringing.unwrap_or(0) + at, ok)),
            cancel,
            ack_after,
            split,
        })
}

const START: u64 = T0 + 10;
const HORIZON: u64 = START + 120_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The callee answers its INVITE with this status line.
    Callee(&'static str),
    Cancel,
    /// The caller ACKs the 200 it got (every copy of it, once it has ACKed).
    Ack,
    /// A peer answers a request of Drongo's (a BYE, a CANCEL) or ACKs a failure.
    Text(String, &'static str),
}

fn member(id: u16) -> Node {
    let mut cfg = Config::default();
    cfg.cluster.transactions = Transactions::Distributed;
    // Both behind one balancer: they advertise its address.
    let mut n = Node::new(
        cfg,
        "127.0.0.1:5060".parse().unwrap(),
        id,
        100 + u64::from(id),
    );
    n.handle_members(T0, 1, &[(1, 1), (2, 1)], &[]);
    n
}

fn cancel_text() -> String {
    INVITE
        .replace("INVITE sip:bob@127.0.0.1", "CANCEL sip:bob@127.0.0.1")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            "Content-Type: application/sdp\nContent-Length: 5\n\nv=0\n",
            "Content-Length: 0\n\n",
        )
}

/// The caller's ACK for a failure `r` to its INVITE (same branch, §17.1.1.3).
fn ack_failure(r: &Response) -> String {
    format!(
        "ACK sip:bob@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa1\n\
         Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: {}\nCall-ID: callA\n\
         CSeq: 1 ACK\nContent-Length: 0\n\n",
        r.headers.get("To").unwrap_or("")
    )
}

/// Plays `s` (split at `s.split` when `split`); every message sent, as
/// "ms destination first-line CSeq".
fn play(s: &Script, split: bool) -> Vec<(u64, String)> {
    let mut store = Store::new();
    let mut n = member(1);
    register_bob(&mut n, &mut store);
    send(&mut n, START, A, INVITE);
    let out = run(&mut n, &mut store);
    let b_inv: Request = match &out[0].1 {
        SipMessage::Request(r) => r.clone(),
        SipMessage::Response(_) => panic!("{:?}", lines(&out)),
    };
    let mut log = Vec::new();
    let mut queue: Vec<(u64, Ev)> = Vec::new();
    if let Some(t) = s.ringing {
        queue.push((START + t, Ev::Callee("180 Ringing")));
    }
    if let Some((t, ok)) = s.answer {
        let status = if ok { "200 OK" } else { "486 Busy Here" };
        queue.push((START + t, Ev::Callee(status)));
    }
    if let Some(t) = s.cancel {
        queue.push((START + t, Ev::Cancel));
    }
    let mut ok_seen: Option<Response> = None;
    let mut caller_final = false;
    let mut acked = false;
    let mut callee_final = false;
    let mut split_at = split.then_some(START + s.split);
    let mut now = START;
    let note = |log: &mut Vec<(u64, String)>, now: u64, out: &[(String, SipMessage)]| {
        for (to, m) in out {
            let cseq = match m {
                SipMessage::Request(r) => r.headers.get("CSeq"),
                SipMessage::Response(r) => r.headers.get("CSeq"),
            };
            log.push((
                now - START,
                format!("{to} {} | {}", first_line(m), cseq.unwrap_or("")),
            ));
        }
    };
    loop {
        queue.sort();
        let timer = n.poll_timeout().unwrap_or(u64::MAX);
        let event = queue.first().map_or(u64::MAX, |(t, _)| *t);
        let split_now = split_at.unwrap_or(u64::MAX);
        let next = timer.min(event).min(split_now);
        if next >= HORIZON {
            break;
        }
        now = now.max(next);
        let out = if split_now == next && split_now <= event.min(timer) {
            // Node 1 dies; node 2 sees it leave, scans its owner index and adopts.
            split_at = None;
            n = member(2);
            n.handle_members(now, 1, &[(2, 1)], &[]);
            scan_all(&mut n, &store, now);
            load_all(&mut n, &store, now);
            run(&mut n, &mut store)
        } else if event == next {
            let (_, ev) = queue.remove(0);
            match ev {
                Ev::Callee(status) if !callee_final => {
                    callee_final = !status.starts_with('1');
                    send(&mut n, now, B, &reply(&b_inv, status));
                }
                Ev::Callee(_) => {}
                // A caller cancels only while it has no final response (§9.1).
                Ev::Cancel if !caller_final => send(&mut n, now, A, &cancel_text()),
                Ev::Cancel => {}
                Ev::Ack => {
                    if let Some(ok) = &ok_seen {
                        acked = true;
                        send(&mut n, now, A, &ack_from_a(ok));
                    }
                }
                Ev::Text(text, from) => send(&mut n, now, from, &text),
            }
            run(&mut n, &mut store)
        } else {
            n.handle_input(now, Input::Timeout);
            run(&mut n, &mut store)
        };
        note(&mut log, now, &out);
        // Reads the node asks for (a request for a call it does not hold) are served.
        let mut out = out;
        while !load_all(&mut n, &store, now).is_empty() {
            let more = run(&mut n, &mut store);
            note(&mut log, now, &more);
            out.extend(more);
        }
        // The parties react at once to what reached them.
        for (to, m) in &out {
            match m {
                SipMessage::Request(r) if r.method.as_str() == "BYE" => {
                    let from = if to.as_str() == B { B } else { A };
                    queue.push((now + 1, Ev::Text(ok_for(r), from)));
                }
                SipMessage::Request(r) if r.method.as_str() == "CANCEL" && !callee_final => {
                    callee_final = true;
                    queue.push((now + 1, Ev::Text(ok_for(r), B)));
                    queue.push((
                        now + 1,
                        Ev::Text(reply(&b_inv, "487 Request Terminated"), B),
                    ));
                }
                SipMessage::Response(r) if to.as_str() == A && r.code == 200 => {
                    let invite = r.headers.get("CSeq").is_some_and(|c| c.ends_with("INVITE"));
                    caller_final |= invite;
                    if invite && ok_seen.is_none() {
                        ok_seen = Some(r.clone());
                        if let Some(after) = s.ack_after {
                            queue.push((now + after, Ev::Ack));
                        }
                    } else if invite && acked {
                        queue.push((now, Ev::Ack));
                    }
                }
                SipMessage::Response(r) if to.as_str() == A && r.code >= 300 => {
                    caller_final = true;
                    queue.push((now + 1, Ev::Text(ack_failure(r), A)));
                }
                _ => {}
            }
        }
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_ringing_call_split_between_two_nodes_sends_what_one_node_would(s in script()) {
        let whole = play(&s, false);
        let split = play(&s, true);
        let after = |log: &[(u64, String)]| -> Vec<(u64, String)> {
            log.iter().filter(|(t, _)| *t >= s.split).cloned().collect()
        };
        let (whole, mut split) = (after(&whole), after(&split));
        // One copy of each final response acknowledged before the split (see the module
        // doc): a line the whole run does not have.
        let finals = ["200 OK", "408 Request Timeout", "486 Busy Here", "487 Request Terminated"];
        for status in finals {
            let copy = format!("127.0.0.1:5061 {status} | 1 INVITE");
            if whole.iter().any(|(_, l)| *l == copy) {
                continue;
            }
            let extra = split.iter().filter(|(_, l)| *l == copy).count();
            prop_assert!(extra <= 1, "{} copies of {}: {:?}", extra, status, s);
            split.retain(|(_, l)| *l != copy);
        }
        let ack = "127.0.0.1:5062 ACK sip:bob@127.0.0.1:5062 | 1 ACK";
        if !whole.iter().any(|(_, l)| l == ack) {
            let extra: Vec<u64> = split.iter().filter(|(_, l)| l == ack).map(|(t, _)| *t).collect();
            prop_assert!(
                extra.len() <= 1 && extra.iter().all(|t| *t == s.split),
                "callee ACKs {:?}: {:?}", extra, s
            );
            split.retain(|(_, l)| l != ack);
        }
        prop_assert_eq!(whole, split, "{:?}", s);
    }
}

/// The split falls on the very millisecond a 2xx copy is due (found by the property test
/// in a CI run): the node that died did not send it, so the adopter does.
#[test]
fn a_copy_due_at_the_split_is_sent_by_the_adopter() {
    let s = Script {
        ringing: None,
        answer: Some((1791, true)),
        cancel: None,
        ack_after: None,
        split: 3291,
    };
    let after = |log: Vec<(u64, String)>| -> Vec<(u64, String)> {
        log.into_iter()
            .filter(|(t, l)| *t >= s.split && !l.contains(" ACK "))
            .collect()
    };
    assert_eq!(after(play(&s, false)), after(play(&s, true)));
}
