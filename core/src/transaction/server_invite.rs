//! The INVITE server transaction (RFC 3261 §17.2.1, Figure 7, as updated by RFC 6026
//! Figure 7: a 2xx from the TU moves it to Accepted, where Timer L absorbs retransmitted
//! INVITEs and the TU retransmits the 2xx itself).

use super::timers::{earliest, Deadline, Timer, TimerConfig, TRYING_DELAY};
use super::{Out, Peer, TxError, TxEvent};
use crate::message::{response_to, Method, Request, Response};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerInviteState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

impl ServerInviteState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Confirmed => "Confirmed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

/// Every field is persisted; every deadline is derived from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInviteTransaction {
    pub request: Request,
    pub peer: Peer,
    pub state: ServerInviteState,
    /// When the INVITE arrived (the 100 Trying delay counts from here).
    pub started_at: UnixMillis,
    /// When the current state was entered (Timers H, I and L count from here).
    pub entered_at: UnixMillis,
    /// When the final response was last (re)sent (Timer G counts from here).
    pub last_sent_at: UnixMillis,
    /// Final response retransmissions sent so far.
    pub retransmits: u32,
    /// The last response sent: resent on a retransmitted INVITE, and by Timer G.
    pub last_response: Option<Response>,
}

impl ServerInviteTransaction {
    pub(crate) fn new(request: Request, peer: Peer, now: UnixMillis) -> Self {
        Self {
            request,
            peer,
            state: ServerInviteState::Proceeding,
            started_at: now,
            entered_at: now,
            last_sent_at: now,
            retransmits: 0,
            last_response: None,
        }
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }

    fn enter(&mut self, state: ServerInviteState, now: UnixMillis) {
        self.state = state;
        self.entered_at = now;
    }

    /// The 2xx that moved us to Accepted never left (its store write failed): as far as
    /// the wire knows we are still Proceeding, so we go back there and may still send a
    /// final response. Returns that 2xx; `None` if we were not in Accepted.
    pub(crate) fn withdraw_2xx(&mut self, now: UnixMillis) -> Option<Response> {
        if self.state != ServerInviteState::Accepted {
            return None;
        }
        self.enter(ServerInviteState::Proceeding, now);
        // The provisional we last sent (if any) is not known any more; none is resent.
        self.last_response.take()
    }

    pub(crate) fn resend_last(&self, out: &mut Out, again: bool) {
        if let Some(r) = &self.last_response {
            out.send_response(self.peer, r, again);
        }
    }

    pub(crate) fn deadline(&self, cfg: &TimerConfig) -> Option<Deadline> {
        use ServerInviteState::*;
        match self.state {
            Proceeding => self
                .last_response
                .is_none()
                .then_some((self.started_at + TRYING_DELAY, Timer::Trying)),
            Completed => earliest(&[
                (!self.reliable())
                    .then(|| (self.last_sent_at + cfg.capped(self.retransmits), Timer::G)),
                Some((self.entered_at + cfg.timeout(), Timer::H)),
            ]),
            Confirmed => {
                let i = if self.reliable() { 0 } else { cfg.t4 };
                Some((self.entered_at + i, Timer::I))
            }
            Accepted => Some((self.entered_at + cfg.timeout(), Timer::L)),
            Terminated => None,
        }
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, now: UnixMillis, out: &mut Out) {
        use ServerInviteState::*;
        match (self.state, timer) {
            (Proceeding, Timer::Trying) => {
                let trying = response_to(&self.request, 100, None, "");
                out.send_response(self.peer, &trying, false);
                self.last_response = Some(trying);
            }
            (Completed, Timer::G) => {
                self.resend_last(out, true);
                self.retransmits += 1;
                self.last_sent_at = now;
            }
            (Completed, Timer::H) => {
                out.event(TxEvent::Timeout {
                    key: out.key(),
                    timer,
                });
                self.enter(Terminated, now);
            }
            (Confirmed, Timer::I) | (Accepted, Timer::L) => self.enter(Terminated, now),
            _ => {}
        }
    }

    /// A retransmitted INVITE, or an ACK for our non-2xx final response.
    pub(crate) fn on_request(&mut self, req: Request, from: Peer, now: UnixMillis, out: &mut Out) {
        use ServerInviteState::*;
        match (self.state, &req.method) {
            (Proceeding | Completed, Method::Invite) => self.resend_last(out, true),
            (Completed, Method::Ack) => self.enter(Confirmed, now),
            (Accepted, Method::Ack) => out.event(TxEvent::Ack { request: req, from }),
            _ => {} // Confirmed absorbs ACKs; Accepted absorbs INVITEs (RFC 6026 §7.1).
        }
    }

    /// A response from the TU.
    pub(crate) fn send_response(
        &mut self,
        resp: Response,
        now: UnixMillis,
        out: &mut Out,
    ) -> Result<(), TxError> {
        use ServerInviteState::*;
        match (self.state, resp.code) {
            (Proceeding, 100..=199) => {}
            (Proceeding, 200..=299) => self.enter(Accepted, now),
            (Proceeding, _) => {
                self.enter(Completed, now);
                self.last_sent_at = now;
                self.retransmits = 0;
            }
            // RFC 6026 §8.5: the TU retransmits its 2xx through the Accepted transaction.
            (Accepted, 200..=299) => {}
            _ => return Err(TxError::InvalidState),
        }
        out.send_response(self.peer, &resp, false);
        self.last_response = Some(resp);
        Ok(())
    }

    pub(crate) fn on_transport_error(&mut self, now: UnixMillis, out: &mut Out) {
        use ServerInviteState::*;
        out.event(TxEvent::TransportError { key: out.key() });
        if matches!(self.state, Proceeding | Completed) {
            self.enter(Terminated, now);
        }
    }
}
