//! The transactions of a layer and the index of their deadlines.
//!
//! Keys are looked up by hash (a node holds hundreds of thousands of transactions at load,
//! most of them waiting out Timer J or K, and comparing long branch strings in a tree was a
//! fifth of the node's time). Order never comes from the hash map: transactions are listed,
//! and deadline ties broken, by creation order, which a restore preserves because
//! snapshots are taken and loaded in that order.

use super::{Transaction, TxKey};
use crate::deadline::DeadlineIndex;
use crate::map::HashMap;
use crate::UnixMillis;
use std::collections::BTreeMap;

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

    /// The id of `key`'s transaction: a step looks its key up once (hashing and comparing
    /// keys was a twelfth of a simulated run's time at three lookups a step).
    pub(crate) fn id(&self, key: &TxKey) -> Option<u64> {
        self.ids.get(key).copied()
    }

    /// Transaction `id` and its key.
    pub(crate) fn entry_mut(&mut self, id: u64) -> Option<(&TxKey, &mut Transaction)> {
        self.entries.get_mut(&id).map(|e| (&e.key, &mut e.tx))
    }

    /// After a step of transaction `id`: removes it if it terminated (returning its key),
    /// else sets its deadline to what `deadline` says.
    pub(crate) fn settle(
        &mut self,
        id: u64,
        deadline: impl FnOnce(&Transaction) -> Option<UnixMillis>,
    ) -> Option<TxKey> {
        let entry = self.entries.get(&id)?;
        if entry.tx.is_terminated() {
            let e = self.take(id)?;
            self.ids.remove(&e.key);
            return Some(e.key);
        }
        let at = deadline(&entry.tx);
        self.timers.set(&id, at);
        None
    }

    /// Adds a transaction (replacing one with the same key); its id for [`Table::settle`].
    pub(crate) fn insert(&mut self, key: TxKey, tx: Transaction) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(old) = self.ids.insert(key.clone(), id) {
            self.take(old);
        }
        self.entries.insert(id, Entry { key, tx });
        id
    }

    pub(crate) fn remove(&mut self, key: &TxKey) -> Option<Transaction> {
        let id = self.ids.remove(key)?;
        self.take(id).map(|e| e.tx)
    }

    /// Takes transaction `id` out with its deadline (its key stays for the caller to
    /// drop or reuse).
    fn take(&mut self, id: u64) -> Option<Entry> {
        self.timers.remove(&id);
        self.entries.remove(&id)
    }

    /// Clears the deadline of transaction `id`.
    pub(crate) fn unschedule(&mut self, id: u64) {
        self.timers.remove(&id);
    }

    /// The earliest deadline and whose it is.
    pub(crate) fn first_timer(&self) -> Option<(UnixMillis, u64)> {
        self.timers.first().map(|(at, id)| (at, *id))
    }

    pub(crate) fn next_deadline(&self) -> Option<UnixMillis> {
        self.timers.next()
    }

    /// Every transaction, in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TxKey, &Transaction)> {
        self.entries.values().map(|e| (&e.key, &e.tx))
    }
}
