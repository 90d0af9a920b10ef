//! Health checks: an OPTIONS to every node each `interval_ms`; a node that fails `fall` in
//! a row (no answer within `timeout_ms`, or a 5xx) leaves new-call routing, and one that
//! then answers `rise` in a row comes back and starts its slow start. The probes are
//! stateless on the wire: the branch names the node and the probe's sequence number.

use super::pool::Pool;
use crate::UnixMillis;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The branch prefix of a probe: `z9hG4bKlbp{node:x}.{seq:x}`.
pub(crate) const PROBE_BRANCH: &str = "z9hG4bKlbp";

/// The probes in flight and when each node is probed next.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    next: BTreeMap<u16, UnixMillis>,
    /// Node → (sequence number, sent at).
    outstanding: BTreeMap<u16, (u64, UnixMillis)>,
    seq: u64,
}

/// A probe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub node: u16,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Probes {
    /// The next probe due at `now`, if any (call until `None`).
    pub fn poll(&mut self, pool: &Pool, me: SocketAddr, now: UnixMillis) -> Option<Probe> {
        self.next.retain(|id, _| pool.node(*id).is_some());
        self.outstanding.retain(|id, _| pool.node(*id).is_some());
        let n = pool.nodes().find(|n| {
            !self.outstanding.contains_key(&n.id) && self.next.get(&n.id).is_none_or(|t| *t <= now)
        })?;
        self.seq += 1;
        let (id, seq) = (n.id, self.seq);
        self.outstanding.insert(id, (seq, now));
        self.next.insert(id, now + pool.cfg.interval_ms.max(1));
        let bytes = format!(
            "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={PROBE_BRANCH}{id:x}.{seq:x}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:balancer@{me}>;tag=lb{id:x}\r\nTo: <sip:{to}>\r\n\
             Call-ID: probe.{id:x}.{seq:x}\r\nCSeq: {seq} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            to = n.addr,
        );
        Some(Probe {
            node: id,
            to: n.addr,
            bytes: bytes.into_bytes(),
        })
    }

    /// The answer `code` to the probe whose branch is `branch`.
    pub fn handle_answer(&mut self, pool: &mut Pool, branch: &str, code: u16, now: UnixMillis) {
        let Some((id, seq)) = branch
            .strip_prefix(PROBE_BRANCH)
            .and_then(|r| r.split_once('.'))
            .and_then(|(id, seq)| {
                Some((
                    u16::from_str_radix(id, 16).ok()?,
                    u64::from_str_radix(seq, 16).ok()?,
                ))
            })
        else {
            return;
        };
        if code < 200 || self.outstanding.get(&id).map(|o| o.0) != Some(seq) {
            return;
        }
        self.outstanding.remove(&id);
        record(pool, id, code < 500, now);
    }

    /// Probes unanswered for `timeout_ms` count as failures.
    pub fn handle_timeout(&mut self, pool: &mut Pool, now: UnixMillis) {
        let timeout = pool.cfg.timeout_ms;
        let late: Vec<u16> = self
            .outstanding
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.outstanding.remove(&id);
            record(pool, id, false, now);
        }
    }

    /// When a probe is next due or times out.
    pub fn next_deadline(&self, pool: &Pool) -> Option<UnixMillis> {
        let timeouts = self
            .outstanding
            .values()
            .map(|(_, at)| at + pool.cfg.timeout_ms);
        let dues = pool
            .nodes()
            .map(|n| self.next.get(&n.id).copied().unwrap_or(0));
        timeouts.chain(dues).min()
    }
}

/// One probe's outcome for node `id`.
fn record(pool: &mut Pool, id: u16, ok: bool, now: UnixMillis) {
    let (fall, rise) = (pool.cfg.fall.max(1), pool.cfg.rise.max(1));
    let Some(n) = pool.nodes.get_mut(&id) else {
        return;
    };
    if ok {
        n.fails = 0;
        n.oks = n.oks.saturating_add(1);
        if !n.healthy && n.oks >= rise {
            n.healthy = true;
            n.up_since = now;
        }
    } else {
        n.oks = 0;
        n.fails = n.fails.saturating_add(1);
        n.probe_failures += 1;
        if n.healthy && n.fails >= fall {
            n.healthy = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::HealthConfig;
    use super::*;
    use crate::cluster::MemberState;
    use crate::message::{parse_and_validate, Limits, SipMessage};

    #[test]
    fn a_node_falls_after_three_silences_and_rises_after_two_answers() {
        let me = SocketAddr::from(([127, 0, 0, 1], 5000));
        let mut pool = Pool::new(HealthConfig::default(), false);
        pool.upsert(
            1,
            SocketAddr::from(([127, 0, 0, 1], 5061)),
            0,
            MemberState::Active,
            0,
            0,
        );
        let mut probes = Probes::default();
        let mut now = 0;
        for _ in 0..3 {
            let p = probes.poll(&pool, me, now).expect("a probe is due");
            assert!(parse_and_validate(&p.bytes, &Limits::default()).is_ok());
            assert_eq!(probes.poll(&pool, me, now), None, "one in flight per node");
            now += 1000;
            probes.handle_timeout(&mut pool, now);
            now += 1000;
        }
        assert!(
            !pool.alive(1),
            "a static node that fails its probes is gone"
        );
        for _ in 0..2 {
            let p = probes.poll(&pool, me, now).expect("a probe is due");
            let Ok(SipMessage::Request(r)) = parse_and_validate(&p.bytes, &Limits::default())
            else {
                panic!("a probe parses");
            };
            let via = crate::message::Via::parse(r.headers.get("Via").unwrap_or("")).unwrap();
            probes.handle_answer(&mut pool, via.branch().unwrap_or(""), 200, now + 5);
            now += 2000;
        }
        let n = pool.node(1).unwrap();
        assert!(n.healthy && n.up_since == 8005, "{n:?}");
    }
}
