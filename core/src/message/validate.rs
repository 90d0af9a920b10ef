//! Validation beyond the grammar: mandatory headers, single-valued headers, CSeq against the
//! method, sane numbers, URIs, extensions. Every rejection names the rule that failed and the
//! action a server takes: answer with a status code, or drop silently (responses, and
//! requests we cannot answer because they carry no Via).
//!
//! One walk over the headers gathers what the rules look at; the rules are then applied in
//! a fixed order, so that a message breaking several always gets the same answer.

use super::headers::{check_uri, CSeq, NameAddr, UriKind, Via};
use super::lex::parse_decimal;
use super::rules::{Action, Limits, Rejection, Rule};
use super::{Headers, Method, SipMessage};
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

/// A header the rules look at: how many there are and the first one's value.
#[derive(Default, Clone, Copy)]
struct Field<'a> {
    count: usize,
    first: Option<&'a str>,
}

impl<'a> Field<'a> {
    fn see(&mut self, value: &'a str) {
        self.count += 1;
        self.first.get_or_insert(value);
    }
}

/// What one walk over the headers found.
#[derive(Default)]
struct Found<'a> {
    via: Field<'a>,
    vias_valid: bool,
    call_id: Field<'a>,
    from: Field<'a>,
    to: Field<'a>,
    cseq: Field<'a>,
    expires: Option<&'a str>,
    max_forwards: Field<'a>,
    /// Whether every Contact is well-formed (a `*` counts as one).
    contacts_valid: bool,
    contact_star: bool,
    content_type: bool,
    require: bool,
}

impl<'a> Found<'a> {
    fn walk(headers: &'a Headers) -> Self {
        let mut f = Found {
            vias_valid: true,
            contacts_valid: true,
            ..Found::default()
        };
        for h in headers.iter() {
            let v = h.value.as_str();
            // Known names are stored in their canonical spelling (`lex::canonical_name`); the
            // case-insensitive test is for headers built by hand.
            let is = |n: &str| h.name.len() == n.len() && h.name.eq_ignore_ascii_case(n);
            match h.name.len() {
                3 if is("Via") => {
                    f.via.see(v);
                    f.vias_valid &= Via::is_valid(v);
                }
                7 if is("Call-ID") => f.call_id.see(v),
                4 if is("From") => f.from.see(v),
                2 if is("To") => f.to.see(v),
                4 if is("CSeq") => f.cseq.see(v),
                7 if is("Expires") => {
                    f.expires.get_or_insert(v);
                }
                12 if is("Max-Forwards") => f.max_forwards.see(v),
                7 if is("Contact") => {
                    if v == "*" {
                        f.contact_star = true;
                    } else {
                        f.contacts_valid &= contact_is_valid(v);
                    }
                }
                12 if is("Content-Type") => f.content_type = true,
                7 if is("Require") => f.require = true,
                _ => {}
            }
        }
        f
    }
}

/// A Contact value other than `*`: a name-addr whose first `expires` parameter, if any, is
/// a number.
fn contact_is_valid(c: &str) -> bool {
    let mut expires: Option<Option<&str>> = None;
    NameAddr::check(c, |name, value| {
        if expires.is_none() && name.eq_ignore_ascii_case("expires") {
            expires = Some(value);
        }
    }) && expires.is_none_or(|e| parse_decimal(e.unwrap_or(""), u32::MAX as u64).is_some())
}

fn check(msg: &SipMessage, limits: &Limits, proxy: bool) -> Result<(), Rejection> {
    let is_response = matches!(msg, SipMessage::Response(_));
    let h = msg.headers();
    let fail = |rule| Err(Rejection::new(rule, is_response));
    let f = Found::walk(h);

    // Without a Via there is nowhere to send an answer.
    let Some(top_via) = f.via.first else {
        return Err(Rejection::drop(Rule::MissingHeader("Via")));
    };
    if !f.vias_valid {
        return fail(Rule::BadHeaderValue("Via"));
    }
    for (name, field) in [
        ("Call-ID", f.call_id),
        ("From", f.from),
        ("To", f.to),
        ("CSeq", f.cseq),
    ] {
        match field.count {
            0 => return fail(Rule::MissingHeader(name)),
            1 => {}
            _ => return fail(Rule::DuplicateHeader(name)),
        }
    }
    let call_id = f.call_id.first.unwrap_or("");
    if call_id.is_empty() || call_id.contains([' ', '\t']) {
        return fail(Rule::BadHeaderValue("Call-ID"));
    }
    let Some(cseq) = f.cseq.first.and_then(CSeq::parse) else {
        return fail(Rule::BadHeaderValue("CSeq"));
    };
    let name_addr = |v: &str| NameAddr::check(v, |_, _| {});
    if !f.from.first.is_some_and(name_addr) {
        return fail(Rule::BadHeaderValue("From"));
    }
    if !f.to.first.is_some_and(name_addr) {
        return fail(Rule::BadHeaderValue("To"));
    }
    if f.expires
        .is_some_and(|e| parse_decimal(e, u32::MAX as u64).is_none())
    {
        return fail(Rule::BadHeaderValue("Expires"));
    }
    if !f.contacts_valid {
        return fail(Rule::BadHeaderValue("Contact"));
    }
    if !msg.body().is_empty() && !f.content_type {
        return fail(Rule::MissingContentType);
    }

    let req = match msg {
        SipMessage::Response(_) => {
            // ... unless it answers a request a member forwarded as a proxy (its Via on
            // top: `node::forward`).
            let forwarded = || Via::parse(top_via).is_some_and(|v| v.is_forwarding());
            if f.via.count > 1 && !proxy && !forwarded() {
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
    if f.max_forwards.count > 1 {
        return fail(Rule::DuplicateHeader("Max-Forwards"));
    }
    if f.max_forwards
        .first
        .is_some_and(|v| parse_decimal(v, 255).is_none())
    {
        return fail(Rule::BadHeaderValue("Max-Forwards"));
    }
    match check_uri(&req.uri) {
        None => return fail(Rule::BadRequestUri),
        Some(UriKind::Other) => return fail(Rule::UnsupportedUriScheme),
        Some(UriKind::Sip | UriKind::Tel) => {}
    }
    if f.contact_star && req.method != Method::Register {
        return fail(Rule::BadHeaderValue("Contact"));
    }
    if f.require && !proxy && !matches!(req.method, Method::Ack | Method::Cancel) {
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
