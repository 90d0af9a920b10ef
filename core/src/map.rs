//! The core's hash maps. Their keys are what peers send (branches, Call-IDs, tags) and
//! every message looks several up, so they hash with foldhash: seeded per process like
//! std's SipHash (a peer cannot aim keys at one bucket without knowing the seed), and
//! several times faster on short strings (SipHash was 3 % of a simulated run). No map is
//! ever iterated where order could show: order comes from trees and creation counters.

pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
