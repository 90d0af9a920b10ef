//! A complete linearizability checker for histories of store operations: the search of
//! Wing & Gong with Lowe's memoization, as Porcupine and Knossos implement it, split per key
//! (P-compositionality: a history is linearizable iff each key's sub-history is).
//!
//! The model of one key is its version (`None`: absent). A read sees a version; a write is a
//! compare-and-swap from `expect` to `new` (`new: None` deletes) answered `Ok` (it took
//! effect once, inside its interval), `Conflict` (it took no effect, and the version was
//! not `expect` at some moment of its interval) or `Ambiguous` (it may have taken effect at
//! any moment after its call, even after the client gave up, or never). Expiry is not
//! modelled: check keys without leases.
//!
//! The search tries, in real-time order, every operation that may go next (its call before
//! the earliest pending return), applies it to the model, and backtracks when the earliest
//! return is reached with its operation not yet placed. A (placed set, model state) pair
//! seen before is not searched again, which keeps ordinary histories near linear.

use std::collections::{BTreeMap, HashSet};

/// What an operation did and saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read {
        seen: Option<u64>,
    },
    Write {
        expect: Option<u64>,
        new: Option<u64>,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Conflict,
    Ambiguous,
    /// Refused before it touched its key (a fenced write under a later leader's term): it
    /// says nothing of the key, and the check leaves it out.
    Refused,
}

/// One operation: its key, when it was called and when its answer came (an ambiguous
/// write's `ret` is ignored: it may take effect at any time after `call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub key: String,
    pub call: u64,
    pub ret: u64,
    pub kind: Kind,
}

/// Checks `history`; each key starts at `initial(key)`. `Err` names the key whose
/// operations no order explains.
pub fn check(history: &[Op], initial: impl Fn(&str) -> Option<u64>) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let refused = |op: &Op| {
        matches!(
            op.kind,
            Kind::Write {
                outcome: Outcome::Refused,
                ..
            }
        )
    };
    for op in history.iter().filter(|op| !refused(op)) {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_key(&ops, initial(key)).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

/// The states `op` may leave when applied to `state` (none: it cannot go here).
fn step(state: Option<u64>, kind: Kind) -> Vec<Option<u64>> {
    match kind {
        Kind::Read { seen } => (seen == state).then_some(state).into_iter().collect(),
        Kind::Write {
            expect,
            new,
            outcome,
        } => match outcome {
            Outcome::Ok => (state == expect).then_some(new).into_iter().collect(),
            Outcome::Conflict => (state != expect).then_some(state).into_iter().collect(),
            // Took effect here. (That it took none is the search leaving it unplaced: a
            // no-op that could go anywhere would only multiply the orders to try.)
            Outcome::Ambiguous => (state == expect).then_some(new).into_iter().collect(),
            Outcome::Refused => vec![state],
        },
    }
}

fn is_ambiguous(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Write {
            outcome: Outcome::Ambiguous,
            ..
        }
    )
}

/// A call or return event of operation `op`, in a doubly linked list (index 0 is the head).
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

struct List {
    ev: Vec<Event>,
    /// Each operation's call and return event.
    of: Vec<(usize, usize)>,
}

impl List {
    fn new(ops: &[&Op]) -> Self {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            let ret = if is_ambiguous(op.kind) {
                u64::MAX
            } else {
                op.ret.max(op.call)
            };
            // At one instant calls sort before returns: touching intervals overlap.
            order.push((op.call, false, i));
            order.push((ret, true, i));
        }
        order.sort();
        let mut ev = vec![Event {
            op: NIL,
            is_call: false,
            prev: NIL,
            next: NIL,
        }];
        let mut of = vec![(0, 0); ops.len()];
        for (_, is_return, i) in order {
            let at = ev.len();
            ev.push(Event {
                op: i,
                is_call: !is_return,
                prev: at - 1,
                next: NIL,
            });
            ev[at - 1].next = at;
            if is_return {
                of[i].1 = at;
            } else {
                of[i].0 = at;
            }
        }
        List { ev, of }
    }

    fn unlink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.ev[e];
        self.ev[prev].next = next;
        if next != NIL {
            self.ev[next].prev = prev;
        }
    }

    fn relink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.ev[e];
        self.ev[prev].next = e;
        if next != NIL {
            self.ev[next].prev = e;
        }
    }

    /// Takes operation `op` out (it is placed); `put_back` undoes it, in reverse order.
    fn lift(&mut self, op: usize) {
        let (c, r) = self.of[op];
        self.unlink(c);
        self.unlink(r);
    }

    fn put_back(&mut self, op: usize) {
        let (c, r) = self.of[op];
        self.relink(r);
        self.relink(c);
    }
}

fn check_key(ops: &[&Op], initial: Option<u64>) -> Result<(), String> {
    let mut list = List::new(ops);
    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    // Placed operations: (its call event, the state before it, the alternative taken).
    let mut stack: Vec<(usize, Option<u64>, usize)> = Vec::new();
    let mut state = initial;
    let mut entry = list.ev[0].next;
    let mut first_alt = 0;
    let mut deepest = 0;
    while entry != NIL {
        let e = list.ev[entry];
        if e.is_call {
            let nexts = step(state, ops[e.op].kind);
            let mut moved = false;
            for (alt, next) in nexts.iter().enumerate().skip(first_alt) {
                placed[e.op / 64] |= 1 << (e.op % 64);
                if seen.insert((placed.clone(), *next)) {
                    stack.push((entry, state, alt));
                    deepest = deepest.max(stack.len());
                    state = *next;
                    list.lift(e.op);
                    entry = list.ev[0].next;
                    moved = true;
                    break;
                }
                placed[e.op / 64] &= !(1 << (e.op % 64));
            }
            first_alt = 0;
            if !moved {
                entry = e.next;
            }
            continue;
        }
        if is_ambiguous(ops[e.op].kind) {
            // Only ambiguous writes are left (their returns sort last): those not placed
            // never took effect.
            return Ok(());
        }
        // The earliest pending return, its operation not placed: undo the last placement
        // and try what comes after it.
        let Some((call, before, alt)) = stack.pop() else {
            return Err(format!(
                "not linearizable: at most {deepest} of {} operations can be ordered",
                ops.len()
            ));
        };
        let op = list.ev[call].op;
        list.put_back(op);
        placed[op / 64] &= !(1 << (op % 64));
        state = before;
        entry = call;
        first_alt = alt + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, kind: Kind) -> Op {
        Op {
            key: "k".into(),
            call,
            ret,
            kind,
        }
    }
    fn read(call: u64, ret: u64, seen: u64) -> Op {
        op(call, ret, Kind::Read { seen: Some(seen) })
    }
    fn cas(call: u64, ret: u64, from: u64, outcome: Outcome) -> Op {
        let kind = Kind::Write {
            expect: Some(from),
            new: Some(from + 1),
            outcome,
        };
        op(call, ret, kind)
    }
    fn at0(_: &str) -> Option<u64> {
        Some(0)
    }

    #[test]
    fn rejects_a_stale_read_after_a_newer_read() {
        // The pairwise checker accepted this: read 1 puts the write before 2, read 0 after 10.
        let h = [cas(0, 20, 0, Outcome::Ok), read(1, 2, 1), read(10, 11, 0)];
        assert!(check(&h, at0).is_err());
        // Swapped in time, both reads fit.
        let h = [cas(0, 20, 0, Outcome::Ok), read(1, 2, 0), read(10, 11, 1)];
        assert!(check(&h, at0).is_ok());
    }

    #[test]
    fn rejects_what_no_order_explains() {
        // Two acknowledged writers of one version.
        assert!(check(&[cas(1, 2, 0, Outcome::Ok), cas(1, 3, 0, Outcome::Ok)], at0).is_err());
        // A value nobody wrote.
        assert!(check(&[read(1, 2, 3)], at0).is_err());
        // The writes in the wrong real-time order.
        assert!(check(&[cas(1, 2, 1, Outcome::Ok), cas(5, 6, 0, Outcome::Ok)], at0).is_err());
        // A conflict although the expected version held all through it.
        assert!(check(&[cas(1, 2, 0, Outcome::Conflict)], at0).is_err());
        // A write acknowledged, then read as never made.
        assert!(check(&[cas(1, 2, 0, Outcome::Ok), read(3, 4, 0)], at0).is_err());
        // A delete acknowledged, then the record read back.
        let del = op(
            1,
            2,
            Kind::Write {
                expect: Some(0),
                new: None,
                outcome: Outcome::Ok,
            },
        );
        assert!(check(&[del.clone(), read(3, 4, 0)], at0).is_err());
        assert!(check(&[del, op(3, 4, Kind::Read { seen: None })], at0).is_ok());
    }

    #[test]
    fn accepts_what_some_order_explains() {
        // Concurrent CAS from one version: one wins, the other conflicts.
        let h = [
            cas(1, 5, 0, Outcome::Ok),
            cas(2, 6, 0, Outcome::Conflict),
            read(7, 8, 1),
        ];
        assert!(check(&h, at0).is_ok());
        // An ambiguous write that took effect late, after its client gave up and read the
        // old value back; and one that never did.
        let late = [
            cas(1, 2, 0, Outcome::Ambiguous),
            read(3, 4, 0),
            read(9, 10, 1),
        ];
        assert!(check(&late, at0).is_ok());
        let never = [cas(1, 2, 0, Outcome::Ambiguous), read(3, 4, 0)];
        assert!(check(&never, at0).is_ok());
        // Keys are independent.
        let mut other = read(1, 2, 7);
        other.key = "j".into();
        assert!(check(&[read(1, 2, 0), other], |k| Some(if k == "j" {
            7
        } else {
            0
        }))
        .is_ok());
    }

    #[test]
    fn many_retried_ambiguous_writes_are_checked_quickly() {
        // A client retrying one CAS through an outage: 30 ambiguous copies, then it reads
        // the old version and deletes it. (Found hanging in the simulation: chaos seed 8.)
        let mut h: Vec<Op> = (0..30)
            .map(|i| cas(10 * i, 10 * i + 5, 3, Outcome::Ambiguous))
            .collect();
        h.push(read(400, 401, 3));
        h.push(op(
            402,
            403,
            Kind::Write {
                expect: Some(3),
                new: None,
                outcome: Outcome::Ok,
            },
        ));
        h.push(op(404, 405, Kind::Read { seen: None }));
        assert!(check(&h, |_| Some(3)).is_ok());
        // And one that did land, after the delete: the record is back.
        h.push(read(500, 501, 4));
        assert!(check(&h, |_| Some(3)).is_err());
    }

    #[test]
    fn a_long_sequential_history_is_checked_quickly() {
        let mut h = Vec::new();
        for v in 0..3_000u64 {
            h.push(cas(10 * v, 10 * v + 5, v, Outcome::Ok));
            h.push(read(10 * v + 6, 10 * v + 7, v + 1));
            h.push(cas(10 * v + 1, 10 * v + 4, v, Outcome::Conflict));
        }
        // Each conflict lies inside its write's interval and must be placed after it.
        assert!(check(&h, at0).is_ok());
    }
}
