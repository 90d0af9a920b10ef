//! The state of one B2BUA call: two dialogs (the A-leg towards the caller, the B-leg
//! towards the callee), the transactions that bind them, and the call's own timers (2xx
//! retransmission until ACK, §13.3.1.4; session expiry, RFC 4028; maximum duration).
//!
//! A confirmed call is persisted as one record (`call/{id}`) so that a node that restarts,
//! or another node, can load it and go on: every deadline is derived from its fields.

use crate::dialog::Dialog;
use crate::message::{Request, Response};
use crate::transaction::{TimerConfig, TxKey};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    /// Towards the caller.
    A,
    /// Towards the callee.
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallState {
    /// INVITE sent to the callee, no final answer yet.
    Early,
    /// The caller cancelled; waiting for the callee's final answer.
    Cancelling,
    /// Answered and relayed.
    Confirmed,
    /// Over: BYE went to the legs in `Call::byes`. The record stays until they answer, so
    /// that a node that restarts (or takes over) sends them again: a BYE is never lost with
    /// the node that was to send it.
    Ending,
}

/// A 2xx to an INVITE we sent on `side` and keep retransmitting until its ACK arrives
/// (§13.3.1.4): every T1·2^n, capped at T2, for at most 64·T1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending2xx {
    pub side: Side,
    pub response: Response,
    pub cseq: u32,
    pub first_sent_at: UnixMillis,
    pub last_sent_at: UnixMillis,
    pub retransmits: u32,
}

impl Pending2xx {
    pub fn next_retransmit(&self, t: &TimerConfig) -> UnixMillis {
        self.last_sent_at + t.capped(self.retransmits)
    }

    pub fn gives_up_at(&self, t: &TimerConfig) -> UnixMillis {
        self.first_sent_at + t.timeout()
    }

    /// Where its copies go, `party` being the dialog's peer: where the first went. A
    /// request that came through a proxy (a balancer: the 2xx has its Via too) was
    /// answered to it, by the top Via (§18.2.2); one straight from the party, to the party
    /// (symmetric response).
    pub fn destination(&self, party: crate::transaction::Peer) -> crate::transaction::Peer {
        let h = &self.response.headers;
        h.get("Via")
            .filter(|_| h.count("Via") > 1 && party.transport == crate::transaction::Transport::Udp)
            .and_then(crate::message::response_target)
            .map_or(party, |addr| crate::transaction::Peer {
                addr,
                transport: party.transport,
            })
    }
}

/// An in-dialog request relayed from one leg to the other, waiting for the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// The server transaction on the side the request came from.
    pub server: TxKey,
    pub from_side: Side,
    /// The request as received (responses to it are built from it).
    pub request: Request,
    /// The request as sent on the other leg (its CSeq is needed for the ACK of a 2xx).
    pub sent_cseq: u32,
}

/// One B2BUA call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    /// Version of the stored record (0: never stored).
    pub version: u64,
    pub state: CallState,
    pub a: Dialog,
    pub b: Dialog,
    /// The caller's initial INVITE and its server transaction, until the call is answered
    /// or fails. Not stored as such: a ringing call's record has the transaction (`txs`).
    #[serde(skip)]
    pub a_invite: Option<(TxKey, Request)>,
    /// The client transaction of the INVITE to the callee, until it ends.
    #[serde(skip)]
    pub b_invite: Option<(TxKey, Request)>,
    /// While the call rings: its two INVITE transactions as they were when the record was
    /// last written, so that an adopter restores them (every deadline derives from their
    /// fields) or at least answers the caller (`[cluster] transactions`); with
    /// `distributed` transactions, those of its `relays` too. Other transactions live only
    /// in memory (a restored call has none of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub txs: Vec<crate::transaction::Snapshot>,
    /// Whether the callee has sent a provisional response (a CANCEL may be sent).
    pub b_provisional: bool,
    pub created_at: UnixMillis,
    /// When the call was given up (`Cancelling`): 64·T1 later its INVITE transactions are
    /// waited for no longer (§9.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<UnixMillis>,
    pub answered_at: Option<UnixMillis>,
    /// Session interval in seconds and the time of the last refresh (RFC 4028).
    pub session_interval: u64,
    pub refreshed_at: UnixMillis,
    /// Maximum call duration in seconds (0: none).
    pub max_duration: u64,
    pub pending_2xx: Option<Pending2xx>,
    /// Re-INVITEs and other in-dialog requests on their way to the other leg, by the key of
    /// the client transaction that carries them. Stored (without bodies, their two
    /// transactions in `txs`) with `distributed` transactions only, so that an adopter
    /// carries a re-INVITE in progress on; otherwise they die with their node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<(TxKey, Relay)>,
    /// A 200 to a party's BYE may never have reached it: a write of the call failed (the
    /// 200 was withdrawn with it), or the call was restored `Ending` (the 200 may have died
    /// with the node). Once the call is gone its dialogs still answer that BYE's
    /// retransmissions (see `Calls::remember_ended`).
    #[serde(skip)]
    pub bye_owed: bool,
    /// A relayed re-INVITE answered 2xx whose ACK we wait for from `Side`, with the CSeq the
    /// other leg's ACK must carry.
    pub awaiting_ack: Option<(Side, u32, u32)>,
    /// Legs whose BYE has not been answered yet (state `Ending`).
    #[serde(default)]
    pub byes: Vec<Side>,
    /// The node that handles the call (0: unknown). Until takeover exists (wave 2), a
    /// restarting node loads only its own calls.
    #[serde(default)]
    pub owner: u16,
    /// The owner's incarnation when it took the call (0: single node).
    #[serde(default)]
    pub owner_incarnation: u64,
}

/// Why a call timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallTimer {
    Retransmit2xx,
    AckTimeout,
    SessionExpired,
    MaxDuration,
    /// Timer C: the callee rang too long.
    NoAnswer,
}

impl Call {
    /// Whether `p` is the 2xx made when the callee answered the initial INVITE (not a
    /// relayed re-INVITE's).
    pub fn answers_invite(&self, p: &Pending2xx) -> bool {
        p.side == Side::A && self.answered_at == Some(p.first_sent_at)
    }

    /// Nothing of it a draining node must stay for: confirmed, no 2xx awaiting its ACK.
    pub fn is_settled(&self) -> bool {
        self.state == CallState::Confirmed && self.pending_2xx.is_none()
    }

    pub fn dialog(&self, side: Side) -> &Dialog {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    pub fn dialog_mut(&mut self, side: Side) -> &mut Dialog {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// The next call timer, derived from the call's fields.
    pub fn deadline(&self, t: &TimerConfig) -> Option<(UnixMillis, CallTimer)> {
        let mut c: Vec<(UnixMillis, CallTimer)> = Vec::new();
        if let Some(p) = &self.pending_2xx {
            c.push((p.next_retransmit(t), CallTimer::Retransmit2xx));
            c.push((p.gives_up_at(t), CallTimer::AckTimeout));
        }
        match self.state {
            CallState::Early => c.push((self.created_at + t.timer_c, CallTimer::NoAnswer)),
            // Given up: the callee's answer to the CANCEL (and the caller's ACK) has 64·T1
            // at most (§9.1).
            CallState::Cancelling => c.push((
                self.cancelled_at.unwrap_or(self.created_at) + t.timeout(),
                CallTimer::NoAnswer,
            )),
            _ => {}
        }
        if self.state == CallState::Confirmed {
            // RFC 4028 §10: without a refresh, end the session a little before it expires
            // on the other side's clock: interval - min(32 s, interval / 3).
            let slack = 32.min(self.session_interval / 3);
            let end = self.refreshed_at + (self.session_interval - slack) * 1000;
            c.push((end, CallTimer::SessionExpired));
            if let (Some(at), true) = (self.answered_at, self.max_duration > 0) {
                c.push((at + self.max_duration * 1000, CallTimer::MaxDuration));
            }
        }
        c.into_iter().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Headers;
    use crate::transaction::{Peer, Transport};

    fn pending(vias: &[&str]) -> Pending2xx {
        let mut headers = Headers::default();
        for v in vias {
            headers.push("Via", *v);
        }
        Pending2xx {
            side: Side::A,
            response: Response {
                code: 200,
                reason: "OK".into(),
                headers,
                body: Vec::new(),
            },
            cseq: 1,
            first_sent_at: 0,
            last_sent_at: 0,
            retransmits: 0,
        }
    }

    /// lb-node-crash-under-load seeds 2 and 21 (with the node down 0.5-15 s): an adopter
    /// sent a 2xx that had come through the balancer straight to the party.
    #[test]
    fn a_2xx_goes_back_the_way_its_request_came() {
        let party = Peer {
            transport: Transport::Udp,
            addr: "10.0.2.5:5060".parse().unwrap(),
        };
        let through = pending(&[
            "SIP/2.0/UDP 10.0.3.1:5060;branch=z9hG4bKlb1",
            "SIP/2.0/UDP 10.0.2.5:5060;branch=z9hG4bKa;received=10.0.2.5;rport=5060",
        ]);
        assert_eq!(
            through.destination(party).addr,
            "10.0.3.1:5060".parse().unwrap()
        );
        let direct = pending(&["SIP/2.0/UDP 192.168.1.9:5060;branch=z9hG4bKa;received=10.0.2.5"]);
        assert_eq!(
            direct.destination(party),
            party,
            "symmetric, as its first copy"
        );
    }
}
