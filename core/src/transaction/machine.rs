//! One transaction of any of the four kinds, as one type: the layer dispatches timers,
//! messages and transport errors to its state machine, and persists it as a snapshot.

use super::*;

/// One transaction of any of the four kinds. Serializing it is taking its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transaction {
    ClientInvite(ClientInviteTransaction),
    ClientNonInvite(ClientNonInviteTransaction),
    ServerInvite(ServerInviteTransaction),
    ServerNonInvite(ServerNonInviteTransaction),
}

impl Transaction {
    pub(super) fn deadline(&self, cfg: &TimerConfig) -> Option<Deadline> {
        match self {
            Self::ClientInvite(t) => t.deadline(cfg),
            Self::ClientNonInvite(t) => t.deadline(cfg),
            Self::ServerInvite(t) => t.deadline(cfg),
            Self::ServerNonInvite(t) => t.deadline(cfg),
        }
    }

    pub(super) fn on_timer(&mut self, timer: Timer, now: UnixMillis, out: &mut Out) {
        match self {
            Self::ClientInvite(t) => t.on_timer(timer, now, out),
            Self::ClientNonInvite(t) => t.on_timer(timer, now, out),
            Self::ServerInvite(t) => t.on_timer(timer, now, out),
            Self::ServerNonInvite(t) => t.on_timer(timer, now, out),
        }
    }

    /// Lays the retransmission schedule over a restored snapshot (see
    /// [`super::lay_schedule`]).
    pub(super) fn catch_up(&mut self, cfg: &TimerConfig, now: UnixMillis) {
        // (start, whether the interval is capped at T2, the restored count).
        let (start, capped, retransmits, last_sent_at) = match self {
            Self::ClientInvite(t) if t.state == ClientInviteState::Calling => {
                (t.started_at, false, &mut t.retransmits, &mut t.last_sent_at)
            }
            // Timer E: a relayed request restored by an adopter (distributed transactions).
            // Once resent in Proceeding its copies are T2 apart from the last one: nothing
            // to lay then.
            Self::ClientNonInvite(t)
                if matches!(
                    t.state,
                    ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
                ) && !t.resent_in_proceeding =>
            {
                (t.started_at, true, &mut t.retransmits, &mut t.last_sent_at)
            }
            Self::ServerInvite(t) if t.state == ServerInviteState::Completed => {
                (t.entered_at, true, &mut t.retransmits, &mut t.last_sent_at)
            }
            _ => return,
        };
        let interval = |n| {
            if capped {
                cfg.capped(n)
            } else {
                cfg.doubling(n)
            }
        };
        lay_schedule(start, now, interval, retransmits, last_sent_at);
    }

    pub(super) fn on_transport_error(&mut self, now: UnixMillis, out: &mut Out) {
        match self {
            Self::ClientInvite(t) => t.on_transport_error(now, out),
            Self::ClientNonInvite(t) => t.on_transport_error(now, out),
            Self::ServerInvite(t) => t.on_transport_error(now, out),
            Self::ServerNonInvite(t) => t.on_transport_error(now, out),
        }
    }

    /// The request that opened the transaction.
    pub fn request(&self) -> &Request {
        match self {
            Self::ClientInvite(t) => &t.request,
            Self::ClientNonInvite(t) => &t.request,
            Self::ServerInvite(t) => &t.request,
            Self::ServerNonInvite(t) => &t.request,
        }
    }

    pub fn request_mut(&mut self) -> &mut Request {
        match self {
            Self::ClientInvite(t) => &mut t.request,
            Self::ClientNonInvite(t) => &mut t.request,
            Self::ServerInvite(t) => &mut t.request,
            Self::ServerNonInvite(t) => &mut t.request,
        }
    }

    /// The state's name, as in the RFC figures.
    pub fn state_name(&self) -> &'static str {
        match self {
            Self::ClientInvite(t) => t.state.name(),
            Self::ClientNonInvite(t) => t.state.name(),
            Self::ServerInvite(t) => t.state.name(),
            Self::ServerNonInvite(t) => t.state.name(),
        }
    }

    pub fn is_terminated(&self) -> bool {
        match self {
            Self::ClientInvite(t) => t.state == ClientInviteState::Terminated,
            Self::ClientNonInvite(t) => t.state == ClientNonInviteState::Terminated,
            Self::ServerInvite(t) => t.state == ServerInviteState::Terminated,
            Self::ServerNonInvite(t) => t.state == ServerNonInviteState::Terminated,
        }
    }

    /// Whether the transaction still waits for its final response: a client transaction
    /// that has not heard one, a server transaction that has not sent one. The other states
    /// only absorb retransmissions (Timers D, I, J, K, L, M), which is no reason for a
    /// draining node to stay.
    pub fn awaits_final_response(&self) -> bool {
        match self {
            Self::ClientInvite(t) => matches!(
                t.state,
                ClientInviteState::Calling | ClientInviteState::Proceeding
            ),
            Self::ClientNonInvite(t) => matches!(
                t.state,
                ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
            ),
            Self::ServerInvite(t) => t.state == ServerInviteState::Proceeding,
            Self::ServerNonInvite(t) => matches!(
                t.state,
                ServerNonInviteState::Trying | ServerNonInviteState::Proceeding
            ),
        }
    }

    /// States in which only the TU (or the network) can move the transaction on, so that it
    /// may rightly have no deadline: a server transaction waiting for the TU's answer, and a
    /// client INVITE transaction that got a provisional response (Timer C is the TU's).
    pub fn awaits_tu(&self) -> bool {
        match self {
            Self::ClientInvite(t) => t.state == ClientInviteState::Proceeding,
            Self::ClientNonInvite(_) => false,
            Self::ServerInvite(t) => t.state == ServerInviteState::Proceeding,
            Self::ServerNonInvite(t) => matches!(
                t.state,
                ServerNonInviteState::Trying | ServerNonInviteState::Proceeding
            ),
        }
    }
}

/// A transaction with its key: what a node persists and another node restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub key: TxKey,
    pub transaction: Transaction,
}
