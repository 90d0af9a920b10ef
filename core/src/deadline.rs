//! One index of deadlines, used by every owner of timers (transactions, bindings, calls,
//! orphaned 2xx responses): each key has at most one deadline, the earliest is found in
//! O(log n), and one key is moved in O(log n).
//!
//! Ties are broken by the key's order, never by a hash, so the order in which due timers
//! fire is the same in every run (quinn-proto keeps its timers in one table the same way).

use crate::map::HashMap;
use crate::UnixMillis;
use std::collections::BTreeSet;
use std::hash::Hash;

#[derive(Debug, Clone)]
pub struct DeadlineIndex<K> {
    by_time: BTreeSet<(UnixMillis, K)>,
    /// Each key's entry in `by_time`; only looked up, never iterated.
    at: HashMap<K, UnixMillis>,
}

impl<K> Default for DeadlineIndex<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            at: HashMap::default(),
        }
    }
}

impl<K: Ord + Hash + Clone> DeadlineIndex<K> {
    /// Sets `key`'s deadline (`None` clears it).
    pub fn set(&mut self, key: &K, at: Option<UnixMillis>) {
        if at.is_some() && self.at.get(key) == at.as_ref() {
            return;
        }
        if let Some(old) = self.at.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
        if let Some(at) = at {
            self.by_time.insert((at, key.clone()));
            self.at.insert(key.clone(), at);
        }
    }

    pub fn remove(&mut self, key: &K) {
        self.set(key, None);
    }

    /// `key`'s deadline, if it has one.
    pub fn get(&self, key: &K) -> Option<UnixMillis> {
        self.at.get(key).copied()
    }

    /// The earliest deadline and whose it is.
    pub fn first(&self) -> Option<(UnixMillis, &K)> {
        self.by_time.first().map(|(at, k)| (*at, k))
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<UnixMillis> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The key whose deadline is earliest, if it is due at `now`.
    pub fn first_due(&self, now: UnixMillis) -> Option<&K> {
        self.first().filter(|(at, _)| *at <= now).map(|(_, k)| k)
    }

    /// Every key due at `now`, earliest first.
    pub fn due(&self, now: UnixMillis) -> impl Iterator<Item = &K> {
        self.by_time
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, k)| k)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::DeadlineIndex;

    #[test]
    fn earliest_first_ties_by_key_and_moves() {
        let mut d = DeadlineIndex::default();
        d.set(&"b", Some(10));
        d.set(&"a", Some(10));
        d.set(&"c", Some(5));
        assert_eq!(d.first(), Some((5, &"c")));
        d.set(&"c", Some(20));
        assert_eq!(d.due(10).copied().collect::<Vec<_>>(), vec!["a", "b"]);
        d.remove(&"a");
        assert_eq!(d.first_due(10), Some(&"b"));
        assert_eq!(d.first_due(9), None);
        d.set(&"b", None);
        assert_eq!((d.next(), d.len()), (Some(20), 1));
    }
}
