//! Pacing of identical datagrams (see [`Pacer`]).

use drongo_core::transaction::{Peer, Transmit};
use drongo_core::UnixMillis;
use std::collections::HashMap;

/// Keeps identical datagrams to one peer at least `window` apart.
///
/// A message whose batch waits for a slow store commit leaves late, but its transaction's
/// retransmission timers started when it was made: the copies they produce meanwhile queue
/// up behind it and would all leave at once when the commit finally succeeds (the
/// simulation's `store-outage` scenario found these bursts). A copy that follows an
/// identical datagram by less than half of T1 carries no news, so it is dropped; the next
/// scheduled retransmission goes out as usual.
pub(super) struct Pacer {
    window: u64,
    recent: HashMap<(Peer, u64), UnixMillis>,
    order: std::collections::VecDeque<(UnixMillis, (Peer, u64))>,
}

impl Pacer {
    pub(super) fn new(window: u64) -> Self {
        Self {
            window,
            recent: HashMap::new(),
            order: Default::default(),
        }
    }

    fn key(t: &Transmit) -> (Peer, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        t.bytes.hash(&mut h);
        (t.to, h.finish())
    }

    fn expire(&mut self, now: UnixMillis) {
        while let Some((at, key)) = self.order.front().cloned() {
            if now.saturating_sub(at) < self.window {
                break;
            }
            self.order.pop_front();
            if self.recent.get(&key) == Some(&at) {
                self.recent.remove(&key);
            }
        }
    }

    /// Whether an identical datagram went to the same peer less than `window` ago.
    pub(super) fn contains(&mut self, t: &Transmit, now: UnixMillis) -> bool {
        self.expire(now);
        self.recent.contains_key(&Self::key(t))
    }

    /// Whether `t` may go out at `now` (and if so, remembers it).
    pub(super) fn admit(&mut self, t: &Transmit, now: UnixMillis) -> bool {
        if self.contains(t, now) {
            return false;
        }
        let key = Self::key(t);
        self.recent.insert(key, now);
        self.order.push_back((now, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drongo_core::transaction::Transport;
    use std::net::SocketAddr;

    fn t(port: u16, bytes: &[u8]) -> Transmit {
        Transmit {
            to: Peer {
                transport: Transport::Udp,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            },
            bytes: bytes.to_vec(),
            call_id: None,
        }
    }

    #[test]
    fn pacer_keeps_identical_datagrams_apart() {
        let mut p = Pacer::new(250);
        assert!(p.admit(&t(1, b"BYE"), 1_000));
        assert!(
            !p.admit(&t(1, b"BYE"), 1_010),
            "a copy 10 ms later is dropped"
        );
        assert!(
            p.admit(&t(2, b"BYE"), 1_010),
            "another peer is another datagram"
        );
        assert!(
            p.admit(&t(1, b"BYE 2"), 1_010),
            "other bytes are another datagram"
        );
        assert!(!p.admit(&t(1, b"BYE"), 1_249));
        assert!(p.admit(&t(1, b"BYE"), 1_250), "a copy T1/2 later goes out");
        assert!(p.contains(&t(1, b"BYE"), 1_400));
        assert!(
            !p.contains(&t(1, b"BYE"), 1_500),
            "forgotten after the window"
        );
    }
}
