//! What the user agents saw, kept for the invariants checked at the end of a run and for
//! the fault plan's triggers ("kill the node while a call is ringing").
//!
//! Calls are linked across the B2BUA by a token the caller puts in its SDP (`s=` line),
//! which Drongo relays to the callee unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One leg of a call as its user agent saw it.
#[derive(Debug, Clone, Default)]
pub struct Leg {
    pub ua: String,
    /// The dialog was established (caller: got a 2xx; callee: sent a 2xx).
    pub answered: bool,
    /// The dialog is over for this user agent (it sent or received BYE, or gave up).
    pub ended: bool,
    /// The user agent went silent in this dialog (no BYE, no answers).
    pub vanished: bool,
}

#[derive(Debug, Default)]
pub struct CallLedger {
    pub caller: Leg,
    /// Every INVITE the callees got for this call (a node restart can make more than one).
    pub callees: Vec<Leg>,
    pub ringing: bool,
    pub final_seen: bool,
    pub reinvites_pending: u32,
}

/// What one user agent knows about its registration.
#[derive(Debug, Default, Clone)]
pub struct RegLedger {
    pub refreshed: u64,
    pub lookups: u64,
}

#[derive(Default)]
pub struct Inner {
    pub calls: BTreeMap<String, CallLedger>,
    pub regs: BTreeMap<String, RegLedger>,
    pub calls_started: u64,
    /// INVITE transactions of the user agents that got a provisional response and no final
    /// one yet (an INVITE client transaction has no timer then): since when, and what.
    pub proceeding: BTreeMap<String, (u64, String)>,
}

#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Inner>>);

impl Ledger {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn call(&self, token: &str, f: impl FnOnce(&mut CallLedger)) {
        f(self.lock().calls.entry(token.to_string()).or_default());
    }

    pub fn any_ringing(&self) -> bool {
        self.lock()
            .calls
            .values()
            .any(|c| c.ringing && !c.final_seen)
    }

    pub fn confirmed_calls(&self) -> usize {
        self.lock()
            .calls
            .values()
            .filter(|c| c.caller.answered && !c.caller.ended)
            .count()
    }

    pub fn any_reinvite(&self) -> bool {
        self.lock().calls.values().any(|c| c.reinvites_pending > 0)
    }
}
