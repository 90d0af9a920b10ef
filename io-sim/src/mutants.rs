//! Store-client mutants of the registrar, for the tests that show its checks can fail:
//! the core stays as it is, its writes are bent on their way to the store.

use crate::store::SimStore;
use drongo::store::Store;
use drongo_core::store::{StoreWrite, COPY_PREFIX, REG_PREFIX};
use drongo_core::UnixMillis;

/// How a member's `reg/` writes are bent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegMutants {
    /// `WorldSpec::mutant_blind_bindings`: each write of an address-of-record replaces
    /// whatever the store holds (its compare-and-swap names the version read just before),
    /// as a registrar without compare-and-swap would: the last writer wins.
    pub blind: bool,
    /// `WorldSpec::mutant_idle_watchdog`: the leader's fenced `reg/` writes (the
    /// watchdog's removals of expired bindings) are answered done and never made.
    pub idle_watchdog: bool,
    /// `WorldSpec::mutant_kept_copies`: on a client to another region's store, deletes of
    /// copies are answered done and never made (removals never reach the other region).
    pub kept_copies: bool,
}

impl RegMutants {
    pub fn any(&self) -> bool {
        self.blind || self.idle_watchdog || self.kept_copies
    }
}

fn is_reg(w: &StoreWrite) -> bool {
    w.key().starts_with(REG_PREFIX)
}

/// The writes of `writes` the store is to see, and the places of those dropped (answered
/// `Ok` without being sent).
pub(crate) async fn bend(
    store: &SimStore,
    m: RegMutants,
    writes: Vec<StoreWrite>,
    now: UnixMillis,
) -> (Vec<StoreWrite>, Vec<usize>) {
    let mut kept = Vec::with_capacity(writes.len());
    let mut dropped = Vec::new();
    for (i, mut w) in writes.into_iter().enumerate() {
        let copy_delete =
            matches!(&w, StoreWrite::Delete { key, .. } if key.starts_with(COPY_PREFIX));
        if m.kept_copies && copy_delete {
            dropped.push(i);
            continue;
        }
        if m.idle_watchdog && is_reg(&w) && w.fence().is_some() {
            dropped.push(i);
            continue;
        }
        if m.blind && is_reg(&w) && w.fence().is_none() {
            let held = store
                .get(w.key(), now)
                .await
                .ok()
                .flatten()
                .map(|r| r.version);
            match &mut w {
                StoreWrite::Put { expect, .. } => *expect = held,
                StoreWrite::Delete { expect, .. } => *expect = held.unwrap_or(0),
                StoreWrite::Fenced { .. } => {}
            }
        }
        kept.push(w);
    }
    (kept, dropped)
}

/// The answers to `writes` with `Ok` put back in the places `dropped`.
pub(crate) fn splice<T>(answers: Vec<Result<(), T>>, dropped: &[usize]) -> Vec<Result<(), T>> {
    let total = answers.len() + dropped.len();
    let mut out = Vec::with_capacity(total);
    let mut answers = answers.into_iter();
    for i in 0..total {
        if dropped.contains(&i) {
            out.push(Ok(()));
        } else if let Some(a) = answers.next() {
            out.push(a);
        }
    }
    out
}
