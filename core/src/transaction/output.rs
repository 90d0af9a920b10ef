//! What the layer hands its user: bytes to send (with where they came from), events, and
//! the errors of refused commands.

use super::{Peer, Timer, TxKey};
use crate::message::{Request, Response};

/// Bytes to send to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Vec<u8>,
    /// The Call-ID of the message (`None` for an answer to something unparsable): messages
    /// of one Call-ID keep their order; others need not wait for each other.
    pub call_id: Option<String>,
    /// What sent it, so that a batch whose writes failed is undone without parsing its
    /// bytes again.
    pub origin: Origin,
    /// A copy of something sent before (a timer's retransmission, an answer resent to a
    /// retransmitted request): the node drops it while the first copy may still be
    /// waiting for the store.
    pub retransmission: bool,
}

/// What sent a [`Transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The request of client transaction `key`.
    Request(TxKey),
    /// The ACK that INVITE client transaction `key` sends for a non-2xx answer.
    Ack(TxKey),
    /// A response with status `code` of server transaction `key`.
    Response(TxKey, u16),
    /// Nothing stateful: an ACK for a 2xx, the TU's 2xx retransmissions, an answer to a
    /// message that could not be parsed.
    Stateless,
}

/// What the transaction layer tells its user (the TU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new server transaction: the TU must answer it with `send_response`.
    Request {
        key: TxKey,
        request: Request,
        from: Peer,
    },
    /// A response for a client transaction.
    Response { key: TxKey, response: Response },
    /// An ACK that is not part of a transaction (the ACK for a 2xx, §17.1.1.3), or that
    /// reached an INVITE server transaction in the Accepted state (RFC 6026 §8.7).
    Ack { request: Request, from: Peer },
    /// A response that matches no client transaction.
    StrayResponse { response: Response, from: Peer },
    /// Timer B or F fired (no final response), or Timer H (no ACK for our final response).
    Timeout { key: TxKey, timer: Timer },
    /// The transport failed to send for this transaction.
    TransportError { key: TxKey },
    /// The transaction is gone; its key may be reused.
    Terminated { key: TxKey },
}

/// A command the layer refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// No such transaction (it may have terminated).
    UnknownTransaction,
    /// A transaction with this key already exists.
    DuplicateTransaction,
    /// The request has no top Via with a magic-cookie branch, or no valid CSeq.
    BadRequest,
    /// The response is not allowed in the transaction's state (e.g. a second final).
    InvalidState,
    /// RFC 4320: a non-INVITE transaction never sends 100, nor 408.
    ForbiddenResponse,
    /// ACK is never a client transaction; send it with `send_stateless`.
    AckIsNotATransaction,
}
