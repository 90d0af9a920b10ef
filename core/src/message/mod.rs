//! The SIP message layer: a message model, parsing of datagrams, framing of byte streams,
//! validation beyond the grammar, and generation of responses, ACK and CANCEL.
//!
//! Parsing is our own line-level work (framing, line folding, compact names, LF-only line
//! ends, Content-Length) because rsip 0.4 gets those wrong; so is the syntax check of URIs
//! (rsip refuses some valid ones).

mod framing;
mod generate;
mod headers;
mod lex;
mod parse;
mod rules;
mod stored;
mod validate;

pub use framing::{Frame, FramingError, StreamFramer};
pub use generate::{ack_for_non2xx, cancel_for, error_response_from_raw, response_to};
pub use headers::{header_param, response_target, CSeq, NameAddr, Via};
pub(crate) use lex::split_list as split_commas;
pub use parse::parse_datagram;
pub use rules::{Action, Limits, Rejection, Rule};
pub use validate::{validate, validate_as_proxy};

/// Parses one datagram (or stream frame) and validates it: the message a server may act on,
/// or the rejection that says how to answer or whether to drop.
pub fn parse_and_validate(bytes: &[u8], limits: &Limits) -> Result<SipMessage, Rejection> {
    let msg = parse_datagram(bytes, limits)?;
    validate(&msg, limits)?;
    Ok(msg)
}

use lex::is_token_char;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A SIP request method (§7.1). Methods are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// An extension method, kept as written.
    Other(String),
}

impl Method {
    /// The method for a token; `None` if the token is not a valid method token.
    pub fn from_token(s: &str) -> Option<Self> {
        if s.is_empty() || !s.bytes().all(is_token_char) {
            return None;
        }
        Some(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "REGISTER" => Self::Register,
            "OPTIONS" => Self::Options,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            "PUBLISH" => Self::Publish,
            other => Self::Other(other.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field: a name in canonical form and a value with folding undone and outer
/// whitespace trimmed. Headers that may hold comma-separated lists of values (Via, Route,
/// Record-Route, Contact) are split into one `Header` per value when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Known names are the canonical `&'static str`, so parsing allocates nothing for them.
    pub name: Cow<'static, str>,
    pub value: String,
}

/// A header name as stored: the canonical spelling when the core knows it.
fn header_name(name: &str) -> Cow<'static, str> {
    match lex::canonical_name(name) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(name.to_string()),
    }
}

/// The header fields of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// The first value of header `name` (case-insensitive, long form).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The first value of header `name`, to change in place.
    pub fn first_mut(&mut self, name: &str) -> Option<&mut String> {
        self.0
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &mut h.value)
    }

    /// Every value of header `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The comma-separated tokens of every `name` header (option tags of Supported and
    /// Require), trimmed, empty ones left out.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: header_name(name),
            value: value.into(),
        });
    }

    /// Inserts a header before every other one (for Via and Route).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: header_name(name),
                value: value.into(),
            },
        );
    }

    /// Replaces every `name` header with one of value `value`, in the place of the first.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(name))
        {
            Some(i) => {
                self.0[i].value = value;
                let mut seen = 0usize;
                self.0.retain(|h| {
                    if h.name.eq_ignore_ascii_case(name) {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.push(name, value),
        }
    }

    /// Removes every `name` header.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as written (validated to parse as a URI of a supported scheme).
    pub uri: String,
    pub headers: Headers,
    #[serde(with = "stored::body")]
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Status code, 100 to 699.
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    #[serde(with = "stored::body")]
    pub body: Vec<u8>,
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Self::Request(r) => &r.body,
            Self::Response(r) => &r.body,
        }
    }

    /// The wire form: start line, headers, a Content-Length that matches the body, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }
}

/// A number in decimal, written without a temporary string.
struct Decimal {
    digits: [u8; 20],
    from: usize,
}

impl Decimal {
    fn new(mut n: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut from = digits.len();
        loop {
            from -= 1;
            digits[from] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, from }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.from..]
    }
}

/// The wire form after a start line made of `start` (its CRLF added here).
fn write_wire(start: &[&[u8]], headers: &Headers, body: &[u8]) -> Vec<u8> {
    let size = start.iter().map(|p| p.len()).sum::<usize>()
        + headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>()
        + body.len()
        + 48;
    let mut out = Vec::with_capacity(size);
    for part in start {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
    let mut wrote_length = false;
    for h in headers.iter() {
        let is_length = h.name.eq_ignore_ascii_case("Content-Length");
        if is_length && wrote_length {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        if is_length {
            // The length on the wire is always the body's; a stale value is never sent.
            wrote_length = true;
            out.extend_from_slice(Decimal::new(body.len()).as_bytes());
        } else {
            out.extend_from_slice(h.value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(Decimal::new(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let start: [&[u8]; 4] = [
            self.method.as_str().as_bytes(),
            b" ",
            self.uri.as_bytes(),
            b" SIP/2.0",
        ];
        write_wire(&start, &self.headers, &self.body)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let code = Decimal::new(usize::from(self.code));
        let start: [&[u8]; 4] = [b"SIP/2.0 ", code.as_bytes(), b" ", self.reason.as_bytes()];
        write_wire(&start, &self.headers, &self.body)
    }
}

impl fmt::Display for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// The standard reason phrase for a status code (§21), or a generic one by class.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => generic_reason(code),
    }
}

/// The phrase for a status code §21 does not name, by its class.
fn generic_reason(code: u16) -> &'static str {
    match code / 100 {
        1 => "Session Progress",
        2 => "OK",
        3 => "Redirect",
        4 => "Client Error",
        5 => "Server Error",
        _ => "Global Failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_start_lines() {
        for n in [0usize, 7, 10, 12_345, usize::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
        let resp = Response {
            code: 42,
            reason: "Odd".into(),
            headers: Headers::default(),
            body: b"xy".to_vec(),
        };
        assert_eq!(
            resp.to_bytes(),
            b"SIP/2.0 42 Odd\r\nContent-Length: 2\r\n\r\nxy".to_vec()
        );
    }
}
