//! The transactions of a layer and the index of their deadlines.
//!
//! Keys are looked up by hash (a node holds hundreds of thousands of transactions at load,
//! most of them waiting out Timer J or K, and comparing long branch strings in a tree was a
//! fifth of the node's time). Order never comes from the hash map: transactions are listed,
//! and deadline ties broken, by creation order, which a restore preserves because
//! snapshots are taken and loaded in that order.

use super::{Transaction, TxKey};
use crate::deadline::DeadlineIndex;
use crate::UnixMillis;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
struct Entry {
    key: TxKey,
    tx: Transaction,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    ids: HashMap<TxKey, u64>,
    entries: BTreeMap<u64, Entry>,
    /// The deadline of every transaction that has one, by id (creation order breaks ties).
    timers: DeadlineIndex<u64>,
    next_id: u64,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn contains(&self, key: &TxKey) -> bool {
        self.ids.contains_key(key)
    }

    pub(crate) fn get(&self, key: &TxKey) -> Option<&Transaction> {
        self.ids
            .get(key)
            .and_then(|id| self.entries.get(id))
            .map(|e| &e.tx)
    }

    pub(crate) fn get_mut(&mut self, key: &TxKey) -> Option<&mut Transaction> {
        let id = self.ids.get(key)?;
        self.entries.get_mut(id).map(|e| &mut e.tx)
    }

    /// Adds a transaction (replacing one with the same key).
    pub(crate) fn insert(&mut self, key: TxKey, tx: Transaction) {
        self.remove(&key);
        let id = self.next_id;
        self.next_id += 1;
        self.ids.insert(key.clone(), id);
        self.entries.insert(id, Entry { key, tx });
    }

    pub(crate) fn remove(&mut self, key: &TxKey) -> Option<Transaction> {
        let id = self.ids.remove(key)?;
        self.timers.remove(&id);
        self.entries.remove(&id).map(|e| e.tx)
    }

    /// Sets (or clears) the deadline of `key` in the index.
    pub(crate) fn schedule(&mut self, key: &TxKey, at: Option<UnixMillis>) {
        if let Some(id) = self.ids.get(key) {
            self.timers.set(id, at);
        }
    }

    /// The earliest deadline and whose it is.
    pub(crate) fn first_timer(&self) -> Option<(UnixMillis, TxKey)> {
        let (at, id) = self.timers.first()?;
        self.entries.get(id).map(|e| (at, e.key.clone()))
    }

    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        self.timers.next()
    }

    /// Every transaction, in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TxKey, &Transaction)> {
        self.entries.values().map(|e| (&e.key, &e.tx))
    }
}
