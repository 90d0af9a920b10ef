//! The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8, with RFC 4320's rules:
//! no 100 Trying and no 408 for non-INVITE requests).

use super::timers::{Deadline, Timer, TimerConfig};
use super::{Out, Peer, TxError};
use crate::message::{Request, Response};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl ServerNonInviteState {
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
pub struct ServerNonInviteTransaction {
    pub request: Request,
    pub peer: Peer,
    pub state: ServerNonInviteState,
    /// When the current state was entered (Timer J counts from here).
    pub entered_at: UnixMillis,
    /// The last response sent, resent for each retransmitted request.
    pub last_response: Option<Response>,
}

impl ServerNonInviteTransaction {
    pub(crate) fn new(request: Request, peer: Peer, now: UnixMillis) -> Self {
        Self {
            request,
            peer,
            state: ServerNonInviteState::Trying,
            entered_at: now,
            last_response: None,
        }
    }

    fn enter(&mut self, state: ServerNonInviteState, now: UnixMillis) {
        self.state = state;
        self.entered_at = now;
    }

    pub(crate) fn deadline(&self, cfg: &TimerConfig) -> Option<Deadline> {
        match self.state {
            ServerNonInviteState::Completed => {
                let j = if self.peer.transport.is_reliable() {
                    0
                } else {
                    cfg.timeout()
                };
                Some((self.entered_at + j, Timer::J))
            }
            _ => None,
        }
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, now: UnixMillis, _out: &mut Out) {
        if self.state == ServerNonInviteState::Completed && timer == Timer::J {
            self.enter(ServerNonInviteState::Terminated, now);
        }
    }

    /// A retransmission of the request: resend the last response, if any (§17.2.2).
    pub(crate) fn on_request(&mut self, _req: &Request, out: &mut Out) {
        if let Some(r) = &self.last_response {
            out.send_response(self.peer, r, true);
        }
    }

    pub(crate) fn send_response(
        &mut self,
        resp: Response,
        now: UnixMillis,
        out: &mut Out,
    ) -> Result<(), TxError> {
        use ServerNonInviteState::*;
        if resp.code == 100 || resp.code == 408 {
            return Err(TxError::ForbiddenResponse);
        }
        match (self.state, resp.code) {
            (Trying | Proceeding, 101..=199) => {
                if self.state == Trying {
                    self.enter(Proceeding, now);
                }
            }
            (Trying | Proceeding, 200..) => self.enter(Completed, now),
            _ => return Err(TxError::InvalidState),
        }
        out.send_response(self.peer, &resp, false);
        self.last_response = Some(resp);
        Ok(())
    }

    pub(crate) fn on_transport_error(&mut self, now: UnixMillis, out: &mut Out) {
        out.event(super::TxEvent::TransportError { key: out.key() });
        self.enter(ServerNonInviteState::Terminated, now);
    }
}
