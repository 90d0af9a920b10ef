//! Generation of messages derived from others: responses (§8.2.6), the ACK for a non-2xx
//! final response (§17.1.1.3), CANCEL (§9.1), and error responses to messages too broken to
//! parse (built from their raw lines).

use super::headers::header_param;
use super::parse::{find_head_end, skip_leading_crlf};
use super::rules::{Action, Rejection, Rule};
use super::{reason_phrase, Headers, Method, Request, Response};

/// Adds `;tag=..` to a From/To value that has none.
fn with_tag(value: &str, tag: &str) -> String {
    if header_param(value, "tag").is_some_and(|t| !t.is_empty()) {
        value.to_string()
    } else {
        format!("{value};tag={tag}")
    }
}

/// A response to `req` (§8.2.6): Via (all, in order), From, Call-ID and CSeq copied; To
/// copied with `to_tag` added when it has no tag and the response is not a 100. For a 100,
/// Timestamp is copied too (§8.2.6.1). `reason` defaults to the standard phrase.
pub fn response_to(req: &Request, code: u16, reason: Option<&str>, to_tag: &str) -> Response {
    let mut headers = Headers::default();
    for via in req.headers.get_all("Via") {
        headers.push("Via", via);
    }
    if let Some(from) = req.headers.get("From") {
        headers.push("From", from);
    }
    if let Some(to) = req.headers.get("To") {
        if code == 100 {
            headers.push("To", to);
        } else {
            headers.push("To", with_tag(to, to_tag));
        }
    }
    for name in ["Call-ID", "CSeq"] {
        if let Some(v) = req.headers.get(name) {
            headers.push(name, v);
        }
    }
    if code == 100 {
        if let Some(ts) = req.headers.get("Timestamp") {
            headers.push("Timestamp", ts);
        }
    }
    Response {
        code,
        reason: reason.unwrap_or(reason_phrase(code)).to_string(),
        headers,
        body: Vec::new(),
    }
}

/// The CSeq number of a request; 0 when absent (validation guarantees it is there).
fn cseq_number(req: &Request) -> &str {
    req.headers
        .get("CSeq")
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or("0")
}

/// Headers shared by the ACK and the CANCEL a client transaction builds from its INVITE:
/// the top Via only, Max-Forwards, From, `to`, Call-ID, CSeq with `method`, and the Routes.
fn derived_request(invite: &Request, method: Method, to: &str) -> Request {
    let mut headers = Headers::default();
    if let Some(via) = invite.headers.get("Via") {
        headers.push("Via", via);
    }
    headers.push("Max-Forwards", "70");
    if let Some(from) = invite.headers.get("From") {
        headers.push("From", from);
    }
    headers.push("To", to);
    if let Some(call_id) = invite.headers.get("Call-ID") {
        headers.push("Call-ID", call_id);
    }
    headers.push("CSeq", format!("{} {}", cseq_number(invite), method));
    for route in invite.headers.get_all("Route") {
        headers.push("Route", route);
    }
    Request {
        method,
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}

/// The ACK a client INVITE transaction sends for a 300-699 response (§17.1.1.3): same
/// Request-URI, Call-ID, From, CSeq number and top Via (so the same branch) as the INVITE,
/// the To of the response (with its tag), and the INVITE's Route headers.
pub fn ack_for_non2xx(invite: &Request, response: &Response) -> Request {
    let to = response
        .headers
        .get("To")
        .or(invite.headers.get("To"))
        .unwrap_or("");
    derived_request(invite, Method::Ack, to)
}

/// The CANCEL for an INVITE (§9.1): same Request-URI, Call-ID, To, From, CSeq number and
/// top Via as the INVITE, and its Route headers.
pub fn cancel_for(invite: &Request) -> Request {
    derived_request(
        invite,
        Method::Cancel,
        invite.headers.get("To").unwrap_or(""),
    )
}

/// An error response to a request that failed to parse or validate, built from its raw
/// lines so that it works even when the message could not be parsed. `None` when the
/// rejection says drop, or when no Via line can be found to send the response back along.
pub fn error_response_from_raw(raw: &[u8], rejection: &Rejection, to_tag: &str) -> Option<Vec<u8>> {
    let Action::Reply(code) = rejection.action else {
        return None;
    };
    let raw = skip_leading_crlf(raw);
    let head = match find_head_end(raw) {
        Some((len, _)) => &raw[..len],
        None => &raw[..raw.len().min(16 * 1024)],
    };
    let head = String::from_utf8_lossy(head);
    // §17.2.3 / §8.2: an ACK is never answered, however broken it is (found by the
    // simulation: a malformed ACK got a 400 that the peer could only drop).
    if head.split_whitespace().next() == Some("ACK") {
        return None;
    }
    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n').skip(1) {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            lines.push(line.to_string());
        }
    }
    let mut headers = Headers::default();
    let wanted = [
        ("Via", "v"),
        ("From", "f"),
        ("To", "t"),
        ("Call-ID", "i"),
        ("CSeq", "CSeq"),
    ];
    for (name, compact) in wanted {
        for line in &lines {
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            let n = n.trim();
            if !(n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact)) {
                continue;
            }
            let v = v.trim();
            if v.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                continue;
            }
            if name == "To" {
                headers.push(name, with_tag(v, to_tag));
            } else {
                headers.push(name, v);
            }
            if name != "Via" {
                break;
            }
        }
    }
    if headers.count("Via") == 0 {
        return None;
    }
    if let Rule::BadExtension(tags) = &rejection.rule {
        headers.push("Unsupported", tags.join(", "));
    }
    let response = Response {
        code,
        reason: match code {
            400 => rejection.rule.reason(),
            _ => reason_phrase(code).to_string(),
        },
        headers,
        body: Vec::new(),
    };
    Some(response.to_bytes())
}
