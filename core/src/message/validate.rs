//! Validation beyond the grammar: mandatory headers, single-valued headers, CSeq against the
//! method, sane numbers, URIs, extensions. Every rejection names the rule that failed and the
//! action a server takes: answer with a status code, or drop silently (responses, and
//! requests we cannot answer because they carry no Via).

use super::headers::{check_uri, CSeq, NameAddr, UriKind, Via};
use super::lex::parse_decimal;
use super::rules::{Action, Limits, Rejection, Rule};
use super::{Method, SipMessage};
use std::fmt;

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Reply(code) => write!(f, "{code} {}", self.rule),
            Action::Drop => write!(f, "drop {}", self.rule),
        }
    }
}

/// Checks the rules of RFC 3261 §8.1.1, §8.2 and §20 that the grammar alone does not.
pub fn validate(msg: &SipMessage, limits: &Limits) -> Result<(), Rejection> {
    check(msg, limits, false)
}

/// The same rules as [`validate`] but those an endpoint alone applies (§16.3: a proxy
/// forwards responses with several Vias and requests that Require what it does not know).
pub fn validate_as_proxy(msg: &SipMessage, limits: &Limits) -> Result<(), Rejection> {
    check(msg, limits, true)
}

fn check(msg: &SipMessage, limits: &Limits, proxy: bool) -> Result<(), Rejection> {
    let is_response = matches!(msg, SipMessage::Response(_));
    let h = msg.headers();
    let fail = |rule| Err(Rejection::new(rule, is_response));

    // Without a Via there is nowhere to send an answer.
    if h.count("Via") == 0 {
        return Err(Rejection::drop(Rule::MissingHeader("Via")));
    }
    if !h.get_all("Via").all(Via::is_valid) {
        return fail(Rule::BadHeaderValue("Via"));
    }
    for name in ["Call-ID", "From", "To", "CSeq"] {
        match h.count(name) {
            0 => return fail(Rule::MissingHeader(name)),
            1 => {}
            _ => return fail(Rule::DuplicateHeader(name)),
        }
    }
    let call_id = h.get("Call-ID").unwrap_or("");
    if call_id.is_empty() || call_id.contains([' ', '\t']) {
        return fail(Rule::BadHeaderValue("Call-ID"));
    }
    let Some(cseq) = h.get("CSeq").and_then(CSeq::parse) else {
        return fail(Rule::BadHeaderValue("CSeq"));
    };
    let name_addr = |v: &str| NameAddr::check(v, |_, _| {});
    if !h.get("From").is_some_and(name_addr) {
        return fail(Rule::BadHeaderValue("From"));
    }
    if !h.get("To").is_some_and(name_addr) {
        return fail(Rule::BadHeaderValue("To"));
    }
    if let Some(e) = h.get("Expires") {
        if parse_decimal(e, u32::MAX as u64).is_none() {
            return fail(Rule::BadHeaderValue("Expires"));
        }
    }
    for c in h.get_all("Contact") {
        // The first `expires` parameter, if any, must be a number.
        let mut expires: Option<Option<&str>> = None;
        let ok = NameAddr::check(c, |name, value| {
            if expires.is_none() && name.eq_ignore_ascii_case("expires") {
                expires = Some(value);
            }
        }) && expires
            .is_none_or(|e| parse_decimal(e.unwrap_or(""), u32::MAX as u64).is_some())
            || c == "*";
        if !ok {
            return fail(Rule::BadHeaderValue("Contact"));
        }
    }
    if !msg.body().is_empty() && h.count("Content-Type") == 0 {
        return fail(Rule::MissingContentType);
    }

    let req = match msg {
        SipMessage::Response(_) => {
            // ... unless it answers a request a member forwarded as a proxy (its Via on
            // top: `node::forward`).
            let forwarded = h
                .get("Via")
                .and_then(super::Via::parse)
                .is_some_and(|v| v.is_forwarding());
            if h.count("Via") > 1 && !proxy && !forwarded {
                return Err(Rejection::drop(Rule::ExtraViaInResponse));
            }
            return Ok(());
        }
        SipMessage::Request(r) => r,
    };
    if cseq.method != req.method {
        return fail(Rule::CSeqMethodMismatch);
    }
    // A request without Max-Forwards is accepted (RFC 4475 §3.4.1: RFC 2543 elements do not
    // send it); the node takes it as 70.
    if h.count("Max-Forwards") > 1 {
        return fail(Rule::DuplicateHeader("Max-Forwards"));
    }
    if h.get("Max-Forwards")
        .is_some_and(|v| parse_decimal(v, 255).is_none())
    {
        return fail(Rule::BadHeaderValue("Max-Forwards"));
    }
    match check_uri(&req.uri) {
        None => return fail(Rule::BadRequestUri),
        Some(UriKind::Other) => return fail(Rule::UnsupportedUriScheme),
        Some(UriKind::Sip | UriKind::Tel) => {}
    }
    if h.get_all("Contact").any(|c| c == "*") && req.method != Method::Register {
        return fail(Rule::BadHeaderValue("Contact"));
    }
    if !proxy && !matches!(req.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = h
            .tokens("Require")
            .filter(|t| {
                !limits
                    .supported_extensions
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(t))
            })
            .map(str::to_string)
            .collect();
        if !unsupported.is_empty() {
            return fail(Rule::BadExtension(unsupported));
        }
    }
    Ok(())
}
