//! The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).

use super::timers::{earliest, Deadline, Timer, TimerConfig};
use super::{Out, Peer, TxEvent};
use crate::message::{Request, Response};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl ClientNonInviteState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Trying => "Trying",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Terminated => "Terminated",
        }
    }
}

/// Every field is persisted; every deadline is derived from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientNonInviteTransaction {
    pub request: Request,
    pub peer: Peer,
    pub state: ClientNonInviteState,
    /// When the request was first sent (Timer F counts from here).
    pub started_at: UnixMillis,
    /// When the current state was entered (Timer K counts from here).
    pub entered_at: UnixMillis,
    /// When the request was last (re)sent (Timer E counts from here).
    pub last_sent_at: UnixMillis,
    /// Retransmissions sent so far.
    pub retransmits: u32,
    /// Whether a retransmission was sent in Proceeding (from then on Timer E is T2).
    pub resent_in_proceeding: bool,
}

impl ClientNonInviteTransaction {
    pub(crate) fn new(request: Request, peer: Peer, now: UnixMillis) -> Self {
        Self {
            request,
            peer,
            state: ClientNonInviteState::Trying,
            started_at: now,
            entered_at: now,
            last_sent_at: now,
            retransmits: 0,
            resent_in_proceeding: false,
        }
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }

    fn enter(&mut self, state: ClientNonInviteState, now: UnixMillis) {
        self.state = state;
        self.entered_at = now;
    }

    /// Timer E: min(T1·2^n, T2) in Trying. In Proceeding the timer pending when the
    /// provisional arrived still fires as set, and each later one is T2 (§17.1.2.2).
    fn timer_e(&self, cfg: &TimerConfig) -> u64 {
        if self.resent_in_proceeding {
            cfg.t2
        } else {
            cfg.capped(self.retransmits)
        }
    }

    pub(crate) fn deadline(&self, cfg: &TimerConfig) -> Option<Deadline> {
        use ClientNonInviteState::*;
        match self.state {
            Trying | Proceeding => earliest(&[
                (!self.reliable()).then(|| (self.last_sent_at + self.timer_e(cfg), Timer::E)),
                Some((self.started_at + cfg.timeout(), Timer::F)),
            ]),
            Completed => {
                let k = if self.reliable() { 0 } else { cfg.t4 };
                Some((self.entered_at + k, Timer::K))
            }
            Terminated => None,
        }
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, now: UnixMillis, out: &mut Out) {
        use ClientNonInviteState::*;
        match (self.state, timer) {
            (Trying | Proceeding, Timer::E) => {
                out.send_request(self.peer, self.request.to_bytes(), true);
                self.retransmits += 1;
                self.last_sent_at = now;
                self.resent_in_proceeding = self.state == Proceeding;
            }
            (Trying | Proceeding, Timer::F) => {
                out.event(TxEvent::Timeout {
                    key: out.key(),
                    timer,
                });
                self.enter(Terminated, now);
            }
            (Completed, Timer::K) => self.enter(Terminated, now),
            _ => {}
        }
    }

    pub(crate) fn on_response(&mut self, resp: Response, now: UnixMillis, out: &mut Out) {
        use ClientNonInviteState::*;
        match (self.state, resp.code) {
            (Trying | Proceeding, 100..=199) => {
                if self.state == Trying {
                    self.enter(Proceeding, now);
                }
                out.event(TxEvent::Response {
                    key: out.key(),
                    response: resp,
                });
            }
            (Trying | Proceeding, _) => {
                self.enter(Completed, now);
                out.event(TxEvent::Response {
                    key: out.key(),
                    response: resp,
                });
            }
            _ => {} // Completed absorbs retransmitted responses.
        }
    }

    pub(crate) fn on_transport_error(&mut self, now: UnixMillis, out: &mut Out) {
        if matches!(
            self.state,
            ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
        ) {
            out.event(TxEvent::TransportError { key: out.key() });
            self.enter(ClientNonInviteState::Terminated, now);
        }
    }
}
