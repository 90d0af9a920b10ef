//! Rendezvous (highest random weight) hashing: each member scores a key, the highest score
//! serves it. Removing a member moves only that member's keys (each to its own next
//! choice); adding one takes an even share from every other. The second choice is the
//! natural standby. Weights (the load balancer's slow start) scale a member's share with
//! the logarithmic method (Schindelhauer and Schomaker), which keeps both properties.

/// FNV-1a, 64 bits: stable across platforms and Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: FNV's low bits alone spread poorly over a few members.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A well-mixed 64-bit hash of `bytes`, stable everywhere (the balancer's Via branches).
pub fn key_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(bytes))
}

/// The member's hash of the key.
fn hash(key_hash: u64, member: u16) -> u64 {
    mix(key_hash ^ mix(u64::from(member).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// A weighted score: `weight / -ln(u)`, `u` the hash mapped into (0, 1].
fn weighted(h: u64, weight: u32) -> f64 {
    let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln().min(-f64::MIN_POSITIVE)
}

/// The members (id, weight) that may serve `key`, best first. A member of weight 0 serves
/// nothing. With equal weights the order depends on integer hashes only (no floating
/// point), so every platform agrees; ties go to the lower id.
pub fn ranked(key: &str, members: &[(u16, u32)]) -> Vec<u16> {
    let kh = fnv1a(key.as_bytes());
    let mut live: Vec<(u16, u32)> = members.iter().copied().filter(|m| m.1 > 0).collect();
    let equal = live.windows(2).all(|w| w[0].1 == w[1].1);
    if equal {
        live.sort_by(|a, b| hash(kh, b.0).cmp(&hash(kh, a.0)).then(a.0.cmp(&b.0)));
    } else {
        live.sort_by(|a, b| {
            let (sa, sb) = (weighted(hash(kh, a.0), a.1), weighted(hash(kh, b.0), b.1));
            sb.total_cmp(&sa).then(a.0.cmp(&b.0))
        });
    }
    live.into_iter().map(|m| m.0).collect()
}

/// The member that serves `key`: the first of [`ranked`].
pub fn choose(key: &str, members: &[(u16, u32)]) -> Option<u16> {
    ranked(key, members).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(members: &[(u16, u32)], n: usize) -> std::collections::BTreeMap<u16, usize> {
        let mut m = std::collections::BTreeMap::new();
        for i in 0..n {
            *m.entry(choose(&format!("call-{i}@host"), members).unwrap_or(0))
                .or_default() += 1;
        }
        m
    }

    #[test]
    fn spreads_evenly_and_is_stable() {
        let members = [(1, 1), (2, 1), (3, 1)];
        let s = share(&members, 30_000);
        for (id, n) in &s {
            assert!((9_000..=11_000).contains(n), "member {id} got {n} of 30000");
        }
        // The same answer whatever the order of the list.
        let k = "a84b4c76e66710@pc33.atlanta.com";
        assert_eq!(
            ranked(k, &[(3, 1), (1, 1), (2, 1)]),
            ranked(k, &[(1, 1), (2, 1), (3, 1)])
        );
        assert_eq!(choose(k, &[]), None);
        assert_eq!(choose(k, &[(7, 0)]), None, "weight 0 serves nothing");
    }

    #[test]
    fn removing_a_member_moves_only_its_keys_to_their_second_choice() {
        let all = [(1, 1), (2, 1), (3, 1)];
        let without_2 = [(1, 1), (3, 1)];
        let mut moved = 0;
        for i in 0..10_000 {
            let k = format!("k{i}");
            let r = ranked(&k, &all);
            let now = choose(&k, &without_2);
            if r[0] == 2 {
                moved += 1;
                assert_eq!(now, Some(r[1]), "the standby adopts");
            } else {
                assert_eq!(now, Some(r[0]), "keys of live members stay");
            }
        }
        assert!((3_000..=3_700).contains(&moved), "{moved}");
    }

    #[test]
    fn weights_scale_a_members_share() {
        let s = share(&[(1, 100), (2, 100), (3, 50)], 30_000);
        let (a, b, c) = (s[&1] as f64, s[&2] as f64, s[&3] as f64);
        // Expected 12,000 / 12,000 / 6,000.
        assert!(
            (a / c - 2.0).abs() < 0.2 && (b / c - 2.0).abs() < 0.2,
            "{s:?}"
        );
        // A member ramping up from a small weight takes keys only from others.
        let low = share(&[(1, 100), (2, 100), (3, 5)], 30_000);
        assert!(low[&3] < 1_200, "{low:?}");
    }

    /// Pinned answers: the load balancer and every node must agree, across builds.
    #[test]
    fn pinned() {
        let m = [(1, 1), (2, 1), (3, 1)];
        let got: Vec<u16> = (0..8)
            .filter_map(|i| choose(&format!("c{i}"), &m))
            .collect();
        assert_eq!(got, PINNED.to_vec());
    }

    const PINNED: [u16; 8] = [3, 1, 1, 1, 1, 3, 3, 1];
}
