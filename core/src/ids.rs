//! Generated identifiers: tags, branches and Call-IDs, from an injected seeded generator.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The RFC 3261 §8.1.1.7 magic cookie that starts every branch we generate.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// The start of the branch of a Via this node puts on a request it forwards to another
/// member (`node::forward`).
pub const FORWARD_BRANCH: &str = "z9hG4bKdrfw";

/// Source of every random identifier a node generates.
///
/// Identifiers carry the node id so that two nodes of a cluster never generate the same one,
/// and come from a `ChaCha8Rng` so that a fixed seed gives a byte-identical run.
#[derive(Debug, Clone)]
pub struct IdGen {
    node: u16,
    rng: ChaCha8Rng,
}

impl IdGen {
    /// A generator for node `node`, seeded with `seed`.
    pub fn new(node: u16, seed: u64) -> Self {
        Self {
            node,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn token(&mut self, random_bytes: usize) -> String {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut out = format!("{:x}", self.node);
        out.push('.');
        let mut bits: u64 = 0;
        let mut nbits = 0;
        for _ in 0..random_bytes {
            bits = (bits << 8) | u64::from(self.rng.next_u32() as u8);
            nbits += 8;
            while nbits >= 5 {
                nbits -= 5;
                out.push(char::from(ALPHABET[((bits >> nbits) & 31) as usize]));
            }
        }
        out
    }

    /// A random number below `n` (e.g. a Retry-After value).
    pub fn below(&mut self, n: u32) -> u32 {
        self.rng.next_u32() % n.max(1)
    }

    /// A From/To tag (§19.3: at least 32 bits of randomness; we use 80).
    pub fn tag(&mut self) -> String {
        self.token(10)
    }

    /// A Via branch starting with the magic cookie (§8.1.1.7), unique in space and time.
    pub fn branch(&mut self) -> String {
        format!("{BRANCH_MAGIC_COOKIE}{}", self.token(15))
    }

    /// A Call-ID (§8.1.1.4): globally unique, here with 120 bits of randomness.
    pub fn call_id(&mut self) -> String {
        self.token(15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_node_prefix() {
        let mut a = IdGen::new(7, 42);
        let mut b = IdGen::new(7, 42);
        let ids_a: Vec<String> = (0..10).map(|_| a.branch()).collect();
        let ids_b: Vec<String> = (0..10).map(|_| b.branch()).collect();
        assert_eq!(ids_a, ids_b);
        assert!(ids_a.iter().all(|b| b.starts_with("z9hG4bK7.")));
        let mut c = IdGen::new(8, 42);
        assert_ne!(c.tag(), IdGen::new(7, 42).tag());
        let mut unique = std::collections::BTreeSet::new();
        let mut g = IdGen::new(1, 1);
        for _ in 0..10_000 {
            assert!(unique.insert(g.tag()));
        }
    }
}
