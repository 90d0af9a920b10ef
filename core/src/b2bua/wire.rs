//! Small helpers for building what the B2BUA sends from what it received.

use crate::message::{Headers, Request, Response};

/// Copies the body of one message (request or response) into another, with the header
/// that describes it.
pub(super) fn copy_body(
    from_headers: &Headers,
    from_body: &[u8],
    to_headers: &mut Headers,
    body: &mut Vec<u8>,
) {
    if !from_body.is_empty() {
        if let Some(ct) = from_headers.get("Content-Type") {
            to_headers.push("Content-Type", ct);
        }
        *body = from_body.to_vec();
    }
}

/// The request's Max-Forwards (70 when absent, as from an RFC 2543 element).
pub(crate) fn max_forwards(req: &Request) -> u32 {
    req.headers
        .get("Max-Forwards")
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(70)
}

/// The interval of a Session-Expires value in seconds (RFC 4028; below 90 is invalid).
pub(super) fn session_expires(value: Option<&str>) -> Option<u64> {
    value
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v >= 90)
}

/// The CSeq number of a request (0 when it has none: validation guarantees one).
pub(crate) fn cseq_of(req: &Request) -> u32 {
    req.headers
        .get("CSeq")
        .and_then(crate::message::CSeq::parse)
        .map_or(0, |c| c.seq)
}

/// The error response that replaces a 2xx to an INVITE whose call could not be saved
/// (the 2xx never left).
pub(crate) fn not_saved(ok: &Response) -> Response {
    let mut err = Response {
        code: 500,
        reason: "Call State Not Saved".into(),
        headers: Default::default(),
        body: Vec::new(),
    };
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in ok.headers.get_all(name) {
            err.headers.push(name, v);
        }
    }
    err
}
