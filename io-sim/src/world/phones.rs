//! The user agents' configurations: callers and callees, each at home on one node (or
//! balancer) of its region, and after them the devices of shared addresses-of-record.

use super::*;

/// Each user agent's configuration and the index of its home node, in order.
pub(super) fn configs(spec: &WorldSpec, rng: &mut ChaCha8Rng) -> Vec<(UaConfig, usize)> {
    // After the callers and callees, the devices of shared addresses-of-record (`twins`):
    // device `a` of pair p through node p, `b` through the next, on one refresh schedule.
    let mut pair_expires = 0;
    let mut out = Vec::new();
    for i in 0..spec.uas + 2 * spec.twins {
        let twin = (i >= spec.uas).then(|| ((i - spec.uas) / 2, (i - spec.uas) % 2));
        let home = match twin {
            Some((p, side)) => (p + side) % spec.nodes.max(1),
            None => i % spec.nodes.max(1),
        };
        let (name, user) = match twin {
            Some((p, side)) => (
                format!("tw{}{}", p + 1, ["a", "b"][side]),
                format!("t{}", p + 1),
            ),
            None => (format!("ua{}", i + 1), format!("u{}", i + 1)),
        };
        // Of the pairs, the first `lapse` share has device `a` let its binding lapse: the
        // record keeps `b`'s, so the lapsed one is the watchdog's to remove.
        let drawn_lapse = (rng.next_u64() % 1000) < (spec.lapse * 1000.0) as u64;
        let lapse = match twin {
            Some((p, side)) => side == 0 && (p as f64) < spec.lapse * spec.twins as f64,
            None => drawn_lapse,
        };
        // (Drawn in the order they always were: the seed, then the expiry.)
        let ua_seed = rng.next_u64();
        let drawn = 30 + (rng.next_u64() % 91) as u32;
        if twin.is_none_or(|(_, side)| side == 0) {
            pair_expires = drawn;
        }
        let cfg = UaConfig {
            name,
            user,
            addr: SocketAddr::new(ua_ip(i), 5060),
            home: if spec.balancers > 0 {
                lb_addr(i % spec.balancers)
            } else {
                SocketAddr::new(node_ip(home), 5060)
            },
            proxies: if spec.balancers > 0 {
                (0..spec.balancers)
                    .map(|k| lb_addr((i + k) % spec.balancers))
                    .collect()
            } else if spec.regions {
                // Its region's members (the other region runs none of its calls).
                let (half, r) = (spec.nodes / 2, regions::region_of(spec, home));
                (0..half)
                    .map(|k| SocketAddr::new(node_ip(r * half + (home + k) % half), 5060))
                    .collect()
            } else {
                (0..spec.nodes)
                    .map(|k| SocketAddr::new(node_ip((home + k) % spec.nodes), 5060))
                    .collect()
            },
            remote: (0..spec.nodes)
                .filter(|k| {
                    spec.regions && regions::region_of(spec, *k) != regions::region_of(spec, home)
                })
                .map(|k| SocketAddr::new(node_ip(k), 5060))
                .collect(),
            failover_ms: (spec.cluster && spec.balancers == 0).then_some(FAILOVER_MS),
            switch_proxies: spec.balancers > 1,
            node_id: 100 + i as u16,
            seed: ua_seed,
            link: spec.link,
            reg_expires: pair_expires,
            lapse_at_ms: lapse.then_some(spec.workload_ms / 2),
            skew_bound_ms: 2 * spec.skew_bound_ms,
            vanish: spec.vanish,
            strict_schedule: !spec.store_misbehaves(),
            commit_slack_ms: 2 * spec.store_latency_ms.1,
            upper_bounds: !spec.store_misbehaves()
                && spec.link.is_clean()
                && spec.faults.is_empty(),
            swallow_cancel: spec.mutant_ignore_cancel,
            lose_adopter_acks: spec.mutant_no_adopter_ack,
            ring_ms: spec.ring_ms,
            patience_ms: spec.patience_ms,
            reinvite_answer_ms: spec.reinvite_answer_ms,
            mutant_keep_bindings: spec.mutant_keep_bindings,
            twin: twin.is_some(),
        };
        out.push((cfg, home));
    }
    out
}
