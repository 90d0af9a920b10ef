//! The INVITE client transaction (RFC 3261 §17.1.1, Figure 5, as updated by RFC 6026
//! Figure 5: a 2xx moves it to Accepted, where Timer M keeps it alive to pass on
//! retransmitted 2xx responses).

use super::timers::{earliest, Deadline, Timer, TimerConfig, TIMER_D_UNRELIABLE};
use super::{Out, Peer, TxEvent};
use crate::message::{ack_for_non2xx, Request, Response};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientInviteState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

impl ClientInviteState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Calling => "Calling",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

/// Every field is persisted; every deadline is derived from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInviteTransaction {
    pub request: Request,
    pub peer: Peer,
    pub state: ClientInviteState,
    /// When the INVITE was first sent (Timer B counts from here).
    pub started_at: UnixMillis,
    /// When the current state was entered (Timers D and M count from here).
    pub entered_at: UnixMillis,
    /// When the INVITE was last (re)sent (Timer A counts from here).
    pub last_sent_at: UnixMillis,
    /// INVITE retransmissions sent so far.
    pub retransmits: u32,
    /// The ACK sent for a non-2xx final response, resent for each retransmission of it.
    pub ack: Option<Request>,
}

impl ClientInviteTransaction {
    pub(crate) fn new(request: Request, peer: Peer, now: UnixMillis) -> Self {
        Self {
            request,
            peer,
            state: ClientInviteState::Calling,
            started_at: now,
            entered_at: now,
            last_sent_at: now,
            retransmits: 0,
            ack: None,
        }
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }

    fn enter(&mut self, state: ClientInviteState, now: UnixMillis) {
        self.state = state;
        self.entered_at = now;
    }

    pub(crate) fn deadline(&self, cfg: &TimerConfig) -> Option<Deadline> {
        use ClientInviteState::*;
        match self.state {
            Calling => earliest(&[
                (!self.reliable())
                    .then(|| (self.last_sent_at + cfg.doubling(self.retransmits), Timer::A)),
                Some((self.started_at + cfg.timeout(), Timer::B)),
            ]),
            Proceeding | Terminated => None,
            Completed => {
                let d = if self.reliable() {
                    0
                } else {
                    TIMER_D_UNRELIABLE
                };
                Some((self.entered_at + d, Timer::D))
            }
            Accepted => Some((self.entered_at + cfg.timeout(), Timer::M)),
        }
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, now: UnixMillis, out: &mut Out) {
        use ClientInviteState::*;
        match (self.state, timer) {
            (Calling, Timer::A) => {
                out.send_request(self.peer, self.request.to_bytes(), true);
                self.retransmits += 1;
                self.last_sent_at = now;
            }
            (Calling, Timer::B) => {
                out.event(TxEvent::Timeout {
                    key: out.key(),
                    timer,
                });
                self.enter(Terminated, now);
            }
            (Completed, Timer::D) | (Accepted, Timer::M) => self.enter(Terminated, now),
            _ => {}
        }
    }

    pub(crate) fn on_response(&mut self, resp: Response, now: UnixMillis, out: &mut Out) {
        use ClientInviteState::*;
        let code = resp.code;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                if self.state == Calling {
                    self.enter(Proceeding, now);
                }
                out.event(TxEvent::Response {
                    key: out.key(),
                    response: resp,
                });
            }
            (Calling | Proceeding, 200..=299) => {
                self.enter(Accepted, now);
                out.event(TxEvent::Response {
                    key: out.key(),
                    response: resp,
                });
            }
            (Calling | Proceeding, _) => {
                let ack = ack_for_non2xx(&self.request, &resp);
                out.send_ack(self.peer, ack.to_bytes(), false);
                self.ack = Some(ack);
                self.enter(Completed, now);
                out.event(TxEvent::Response {
                    key: out.key(),
                    response: resp,
                });
            }
            (Completed, 300..) => {
                // A retransmission of the final response: ACK again, tell nobody.
                if let Some(ack) = &self.ack {
                    out.send_ack(self.peer, ack.to_bytes(), true);
                }
            }
            (Accepted, 200..=299) => out.event(TxEvent::Response {
                key: out.key(),
                response: resp,
            }),
            _ => {}
        }
    }

    pub(crate) fn on_transport_error(&mut self, now: UnixMillis, out: &mut Out) {
        use ClientInviteState::*;
        if matches!(self.state, Calling | Completed) {
            out.event(TxEvent::TransportError { key: out.key() });
            self.enter(Terminated, now);
        }
    }
}
