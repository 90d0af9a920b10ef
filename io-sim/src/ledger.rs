//! What the user agents saw, kept for the invariants checked at the end of a run and for
//! the fault plan's triggers ("kill the node while a call is ringing").
//!
//! Calls are linked across the B2BUA by a token the caller puts in its SDP (`s=` line),
//! which Drongo relays to the callee unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// One leg of a call as its user agent saw it.
#[derive(Debug, Clone, Default)]
pub struct Leg {
    pub ua: String,
    /// The leg's Call-ID (a callee's names Drongo's call record, `call/{call_id}`).
    pub call_id: String,
    /// The dialog was established (caller: got a 2xx; callee: sent a 2xx).
    pub answered: bool,
    /// The dialog is over for this user agent (it sent or received BYE, or gave up).
    pub ended: bool,
    /// The user agent went silent in this dialog (no BYE, no answers).
    pub vanished: bool,
    /// When (simulated ms) it went silent.
    pub vanished_at: Option<u64>,
    /// When this party sent its BYE (it hung up).
    pub bye_sent_at: Option<u64>,
    /// When a BYE from Drongo first reached this party.
    pub got_bye_at: Option<u64>,
    /// A callee's 2xx to the INVITE was acknowledged (before or after a BYE).
    pub acked: bool,
    /// Copies of a callee's 2xx to the INVITE it sent while no ACK came.
    pub unacked_copies: u32,
    /// The party's link loses datagrams (an ACK may be lost for good: see `continuity`).
    pub lossy: bool,
}

/// An in-dialog request on a confirmed call that got no 2xx (481, 408 or silence). At
/// the end of the run it is excused only when the call was ending anyway by then (either
/// party had sent BYE or gone silent, or Drongo was ending it); otherwise Drongo lost a
/// confirmed call.
#[derive(Debug, Clone)]
pub struct Suspect {
    pub at: u64,
    pub caller: bool,
    pub leg: usize,
    /// It was a BYE (its party's own BYE does not excuse it then).
    pub bye: bool,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct CallLedger {
    pub caller: Leg,
    /// Every INVITE the callees got for this call (a node restart can make more than one).
    pub callees: Vec<Leg>,
    pub ringing: bool,
    pub final_seen: bool,
    /// When (simulated ms) the caller sent CANCEL, and a callee its 2xx.
    pub cancelled_at: Option<u64>,
    pub callee_answered_at: Option<u64>,
    pub reinvites_pending: u32,
    /// Re-INVITEs a party got and has not answered yet.
    pub reinvites_held: u32,
    /// The final answer each re-INVITE of the call got, in order (408: none came), when
    /// (simulated ms), and whether a later request of its sender overtook it.
    pub reinvite_answers: Vec<(u16, u64, bool)>,
    pub suspects: Vec<Suspect>,
    /// INFO requests (by the id in their body) that got a 2xx, and those that reached the
    /// other party: a 2xx Drongo relayed must come from the party the INFO was for.
    pub infos_answered: BTreeSet<String>,
    pub infos_seen: BTreeSet<String>,
    /// The user called, and when the INVITE was first sent.
    pub callee_user: String,
    pub invited_at: u64,
}

/// What a run did, for the vacuity checks and the runner's summary: a run that did
/// nothing proves nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub calls_attempted: u64,
    pub calls_answered: u64,
    /// Confirmed calls ended by the caller's BYE, the callee's, or by Drongo (its BYE came
    /// first: session timer, failed write).
    pub ended_by_caller: u64,
    pub ended_by_callee: u64,
    pub ended_by_drongo: u64,
    pub registrations: u64,
    pub deregistrations: u64,
    pub reinvites: u64,
    pub infos: u64,
    pub byes: u64,
    pub faults_planned: u64,
    pub faults_struck: u64,
    /// Faults whose trigger ("while ringing", "in a call", "during a re-INVITE") was met
    /// when they struck (an `At` trigger always is).
    pub triggers_met: u64,
    /// Confirmed calls at the moment a node was killed or stopped, summed over those.
    pub calls_up_at_kills: u64,
    /// Requests in a dialog a user agent sent again to another node (cluster).
    pub failovers: u64,
    /// Requests in a dialog a user agent sent through another balancer than the last.
    pub switches: u64,
    /// Calls ringing on a node as it was killed or stopped, summed over those; and how
    /// many of them the caller heard answered afterwards (a call that outlived its node's
    /// transactions).
    pub ringing_at_kills: u64,
    pub answered_after_kill: u64,
    /// Re-INVITEs in progress on a node as it was killed or stopped, summed over those;
    /// and how many of them were answered 2xx afterwards.
    pub reinvites_at_kills: u64,
    pub reinvites_ok_after_kill: u64,
    /// REGISTERs of one address-of-record in flight from two of its devices at once (each
    /// through its own node): the races a lost update would come from.
    pub register_races: u64,
    /// Listings (200s to REGISTER) checked against another device's view (§10.3 model).
    pub listings_checked: u64,
    /// Bindings past their expiry in a record that still held others (the store does
    /// not expire those by itself: the leader's watchdog must remove them).
    pub watchdog_due: u64,
    /// Lookups answered by the other region than the binding's (`WorldSpec::regions`)
    /// that had to list it, and that had to not list it (removed or expired, replicated).
    pub remote_lookups: u64,
    pub remote_absences: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(o.to_array()) {
            *x += y;
        }
        *self = Self::from_array(a);
    }
}

/// [`Counts::to_array`] and [`Counts::from_array`] from one list of the fields.
macro_rules! counts_as_array {
    ($($field:ident),* $(,)?) => {
        impl Counts {
            /// Every count, in declaration order (how a sweep's worker process reports
            /// them).
            pub fn to_array(&self) -> [u64; 25] {
                [$(self.$field),*]
            }

            pub fn from_array(a: [u64; 25]) -> Self {
                let [$($field),*] = a;
                Self { $($field),* }
            }
        }
    };
}

counts_as_array!(
    calls_attempted,
    calls_answered,
    ended_by_caller,
    ended_by_callee,
    ended_by_drongo,
    registrations,
    deregistrations,
    reinvites,
    infos,
    byes,
    faults_planned,
    faults_struck,
    triggers_met,
    calls_up_at_kills,
    failovers,
    switches,
    ringing_at_kills,
    answered_after_kill,
    reinvites_at_kills,
    reinvites_ok_after_kill,
    register_races,
    listings_checked,
    watchdog_due,
    remote_lookups,
    remote_absences,
);

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "calls {} attempted, {} answered, ended by caller {} / callee {} / drongo {}; \
             registrations {}, de-registrations {}; re-INVITEs {}, INFOs {}, BYEs {}; \
             faults {} planned, {} struck, {} on their trigger; calls up at kills {}; \
             failovers {}, balancer switches {}; ringing at kills {}, of them answered {}; \
             re-INVITEs at kills {}, of them answered 2xx {}; register races {}, listings \
             checked {}, bindings due to the watchdog {}; lookups across regions that had to \
             list {} / not list {}",
            self.calls_attempted,
            self.calls_answered,
            self.ended_by_caller,
            self.ended_by_callee,
            self.ended_by_drongo,
            self.registrations,
            self.deregistrations,
            self.reinvites,
            self.infos,
            self.byes,
            self.faults_planned,
            self.faults_struck,
            self.triggers_met,
            self.calls_up_at_kills,
            self.failovers,
            self.switches,
            self.ringing_at_kills,
            self.answered_after_kill,
            self.reinvites_at_kills,
            self.reinvites_ok_after_kill,
            self.register_races,
            self.listings_checked,
            self.watchdog_due,
            self.remote_lookups,
            self.remote_absences,
        )
    }
}

/// What one device of an address-of-record shared by several knows of its binding, for
/// the others' checks of what a 200 lists (see `ua::twins`).
#[derive(Debug, Default, Clone)]
pub struct RegView {
    pub user: String,
    /// (answer received, expiry it implies) of each 200 that listed the binding since it
    /// was last removed.
    pub grants: Vec<(u64, u64)>,
    /// Latest time the binding could expire.
    pub could_live_until: u64,
    /// A REGISTER adding or refreshing it is in flight.
    pub pending: bool,
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
    /// What the user agents and faults did (the call outcomes are added at the end).
    pub counts: Counts,
    /// INVITE transactions of the user agents that got a provisional response and no final
    /// one yet (an INVITE client transaction has no timer then): since when, what, the
    /// call's token, and whether it is the initial INVITE (not a re-INVITE).
    pub proceeding: BTreeMap<String, (u64, String, String, bool)>,
    /// INVITEs given up without a final response 64·T1 after their CANCEL: (token, what).
    pub unanswered: Vec<(String, String)>,
    /// Each user agent's home node (index).
    pub homes: BTreeMap<String, usize>,
    /// Each user's registrations answered 200 and not removed since: (answered at,
    /// granted until). A call to the user must find them, through any node.
    pub bound: BTreeMap<String, Vec<(u64, u64)>>,
    /// When the regions were cut apart (`Fault::CutRegions`): (from, until) on the user
    /// agents' clock; `None`: not yet healed.
    pub region_cuts: Vec<(u64, Option<u64>)>,
    /// The devices of shared addresses-of-record, by Contact URI.
    pub views: BTreeMap<String, RegView>,
    /// Nodes that must be silent: (address, from, until) in simulated ms; `None`: not yet
    /// healed. A node cut off from the store past its lease sends nothing (the fence).
    pub silent: Vec<(std::net::IpAddr, u64, Option<u64>)>,
    /// Nodes cut off from the balancers: (node id, from, until) on the user agents' clock
    /// (as `CallLedger::invited_at`); `None`: not yet healed. Once the balancers' probes
    /// must have noticed, no new call goes to such a node.
    pub lb_cuts: Vec<(u16, u64, Option<u64>)>,
    /// When the first node was killed or stopped (simulated ms).
    pub first_kill_at: Option<u64>,
    /// Calls ringing on a node when it was killed or stopped (their tokens).
    pub ringing_at_kills: BTreeSet<String>,
    /// Calls with a re-INVITE in progress on a node when it was killed or stopped: their
    /// tokens, and how many of their re-INVITEs had been answered before (the next answer
    /// is that re-INVITE's).
    pub reinviting_at_kills: BTreeMap<String, usize>,
    /// Nodes restarted after a kill: (node id, when on the user agents' clock, as
    /// `CallLedger::invited_at`).
    pub restarts: Vec<(u16, u64)>,
}

#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Inner>>);

impl Ledger {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Since when the regions have been linked without a break, at `at` (`None`: cut).
    pub fn linked_since(&self, at: u64) -> Option<u64> {
        let l = self.lock();
        let mut since = 0;
        for (_, until) in l.region_cuts.iter().filter(|(from, _)| *from <= at) {
            match until {
                Some(u) if *u <= at => since = since.max(*u),
                _ => return None,
            }
        }
        Some(since)
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

    /// The tokens of calls ringing (no final answer yet) whose callee's INVITE came from
    /// node `node` (its B-leg's Call-ID starts with the node id in hex).
    pub fn ringing_on(&self, node: u16) -> Vec<String> {
        let prefix = format!("{node:x}.");
        self.lock()
            .calls
            .iter()
            .filter(|(_, c)| c.ringing && !c.final_seen)
            .filter(|(_, c)| c.callees.iter().any(|l| l.call_id.starts_with(&prefix)))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether a call whose callee's INVITE came from node `node` was answered by its
    /// callee and its caller has not had a final answer yet.
    pub fn answering_on(&self, node: u16) -> bool {
        let prefix = format!("{node:x}.");
        self.lock().calls.values().any(|c| {
            !c.final_seen
                && c.callees
                    .iter()
                    .any(|l| l.answered && l.call_id.starts_with(&prefix))
        })
    }

    /// The calls with a re-INVITE in progress whose callee's INVITE came from node `node`
    /// (see [`Ledger::ringing_on`]), with how many of their re-INVITEs were answered.
    pub fn reinviting_on(&self, node: u16) -> Vec<(String, usize)> {
        let prefix = format!("{node:x}.");
        self.lock()
            .calls
            .iter()
            .filter(|(_, c)| c.reinvites_pending > 0)
            .filter(|(_, c)| c.callees.iter().any(|l| l.call_id.starts_with(&prefix)))
            .map(|(t, c)| (t.clone(), c.reinvite_answers.len()))
            .collect()
    }

    /// Whether a re-INVITE in a call node `node` set up waits for its answer at the other
    /// party (see [`Ledger::reinviting_on`]).
    pub fn reinvite_held_on(&self, node: u16) -> bool {
        let prefix = format!("{node:x}.");
        self.lock()
            .calls
            .values()
            .filter(|c| c.reinvites_held > 0)
            .any(|c| c.callees.iter().any(|l| l.call_id.starts_with(&prefix)))
    }

    pub fn confirmed_calls(&self) -> usize {
        self.lock()
            .calls
            .values()
            .filter(|c| c.caller.answered && !c.caller.ended)
            .count()
    }

    /// Confirmed calls whose caller's home is node `node`.
    pub fn confirmed_calls_on(&self, node: usize) -> usize {
        let l = self.lock();
        l.calls
            .values()
            .filter(|c| c.caller.answered && !c.caller.ended)
            .filter(|c| l.homes.get(&c.caller.ua) == Some(&node))
            .count()
    }

    /// Whether a message from `from` at `at` breaks a silence (see `Inner::silent`).
    pub fn must_be_silent(&self, from: std::net::IpAddr, at: u64) -> bool {
        self.lock()
            .silent
            .iter()
            .any(|(ip, start, end)| *ip == from && *start <= at && end.is_none_or(|e| at <= e))
    }

    pub fn any_reinvite(&self) -> bool {
        self.lock().calls.values().any(|c| c.reinvites_pending > 0)
    }
}
