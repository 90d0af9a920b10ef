//! The leaders' office as the simulated store saw it: who moved the term counter to each
//! term, and whose chore writes (fenced by a term) landed under it. The world checks that
//! each term had one holder and only its holder's chores landed (`one_leader_per_term`).

use drongo::store::StoreError;
use drongo_core::cluster::Leader;
use drongo_core::store::{StoreWrite, LEADER_TERM_KEY};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the store took of the leaders' office, by term: its holders (node,
/// incarnation: the members whose move of the term counter to it landed) and the members
/// whose chore writes fenced by it landed.
#[derive(Clone, Debug, Default)]
pub struct TermLog {
    pub holders: BTreeMap<u64, BTreeSet<(u16, u64)>>,
    pub chores: BTreeMap<u64, BTreeSet<u16>>,
}

/// The [`TermLog`] of a run, kept as the store applies writes.
#[derive(Clone, Default)]
pub struct Terms(Arc<Mutex<TermLog>>);

/// A write that says something of the office.
pub(crate) enum Noted {
    /// The term counter moved to this holder's term.
    Holder(Leader),
    /// A chore fenced by this term.
    Chore(u64),
}

impl Terms {
    pub fn log(&self) -> TermLog {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The writes of a group that say something of the office, by their place in it.
    pub(crate) fn among(writes: &[StoreWrite]) -> Vec<(usize, Noted)> {
        let noted = |(i, w): (usize, &StoreWrite)| match (w.fence(), w.unfenced()) {
            (Some(term), _) => Some((i, Noted::Chore(term))),
            (None, StoreWrite::Put { key, value, .. }) if key == LEADER_TERM_KEY => {
                Leader::decode(value).map(|l| (i, Noted::Holder(l)))
            }
            _ => None,
        };
        writes.iter().enumerate().filter_map(noted).collect()
    }

    /// Notes what of a group (`among`) the store applied (`r`), written by member `from`.
    pub(crate) fn note(
        &self,
        noted: Vec<(usize, Noted)>,
        from: SocketAddr,
        r: &Result<Vec<Result<(), StoreError>>, StoreError>,
    ) {
        let Ok(results) = r else { return };
        // Member i's address is 10.0.1.i (`world::node_ip`).
        let member = match from.ip() {
            std::net::IpAddr::V4(ip) if ip.octets()[..3] == [10, 0, 1] => u16::from(ip.octets()[3]),
            _ => 0,
        };
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (i, n) in noted {
            if !matches!(results.get(i), Some(Ok(()))) {
                continue;
            }
            match n {
                Noted::Holder(l) => {
                    log.holders
                        .entry(l.term)
                        .or_default()
                        .insert((l.node, l.incarnation));
                }
                Noted::Chore(term) => {
                    log.chores.entry(term).or_default().insert(member);
                }
            }
        }
    }
}
