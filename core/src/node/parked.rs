//! Requests parked while the node reads the store for them (a call it does not hold, an
//! address-of-record's bindings), by the name they wait under. Bounded: beyond
//! [`MAX_PARKED`] the node answers 503 instead of parking.

use crate::message::Request;
use crate::transaction::{Peer, TxKey};
use std::collections::BTreeMap;

/// Requests parked at once, at most.
const MAX_PARKED: usize = 4096;

/// A parked request: its server transaction, the request, where it came from.
pub(super) type Entry = (TxKey, Request, Peer);

/// What parking a request came to.
pub(super) enum Park {
    /// The first under its name: the read is the caller's to start.
    First,
    /// Others wait under that name already (one read answers them all).
    Joined,
    /// Too many wait: the request is handed back, to be refused.
    Full(Box<Entry>),
}

#[derive(Default)]
pub(super) struct Parked(BTreeMap<String, Vec<Entry>>);

impl Parked {
    pub(super) fn park(&mut self, name: &str, entry: Entry) -> Park {
        if self.0.values().map(Vec::len).sum::<usize>() >= MAX_PARKED {
            return Park::Full(Box::new(entry));
        }
        let list = self.0.entry(name.to_string()).or_default();
        list.push(entry);
        if list.len() == 1 {
            Park::First
        } else {
            Park::Joined
        }
    }

    /// The requests parked under `name`, in arrival order (none left there).
    pub(super) fn take(&mut self, name: &str) -> Vec<Entry> {
        self.0.remove(name).unwrap_or_default()
    }

    /// The requests parked under `name`, left in place.
    pub(super) fn peek(&self, name: &str) -> impl Iterator<Item = &Entry> {
        self.0.get(name).into_iter().flatten()
    }

    /// Keeps only the requests `keep` says, told each one's name.
    pub(super) fn retain_named(&mut self, mut keep: impl FnMut(&str, &Entry) -> bool) {
        for (name, list) in self.0.iter_mut() {
            list.retain(|e| keep(name, e));
        }
        self.0.retain(|_, list| !list.is_empty());
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Keeps only the requests `keep` says.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        for list in self.0.values_mut() {
            list.retain(&mut keep);
        }
        self.0.retain(|_, list| !list.is_empty());
    }
}
