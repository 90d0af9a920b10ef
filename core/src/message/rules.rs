//! What a message may break and what a server does about it: the rules, the rejection
//! (answer with a status code, or drop), and the size limits parsing enforces.

use std::fmt;

/// What a server does about a message that failed a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer the request with this status code (the reason phrase says which rule failed).
    Reply(u16),
    /// Discard without an answer (a log line and a counter only).
    Drop,
}

/// The rule a message broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Empty,
    MessageTooLarge,
    BodyTooLarge,
    MissingBlankLine,
    NotUtf8,
    BadStartLine,
    UnsupportedVersion,
    BadStatusCode,
    BadRequestUri,
    UnsupportedUriScheme,
    MalformedHeader,
    TooManyHeaders,
    BadContentLength,
    ContentLengthExceedsBody,
    MissingHeader(&'static str),
    DuplicateHeader(&'static str),
    BadHeaderValue(&'static str),
    CSeqMethodMismatch,
    MissingContentType,
    /// `Require` names option tags we do not support (answered 420 with `Unsupported`).
    BadExtension(Vec<String>),
    /// A response carrying more than one Via cannot be for us (§8.1.3.3).
    ExtraViaInResponse,
}

impl Rule {
    /// The status code a server answers a request that broke this rule with.
    pub fn status(&self) -> u16 {
        match self {
            Rule::MessageTooLarge => 513,
            Rule::BodyTooLarge => 413,
            Rule::UnsupportedVersion => 505,
            Rule::UnsupportedUriScheme => 416,
            Rule::BadExtension(_) => 420,
            _ => 400,
        }
    }

    /// A short reason phrase naming the rule.
    pub fn reason(&self) -> String {
        match self {
            Rule::Empty => "Empty Message".into(),
            Rule::MessageTooLarge => "Message Too Large".into(),
            Rule::BodyTooLarge => "Request Entity Too Large".into(),
            Rule::MissingBlankLine => "Missing Blank Line After Headers".into(),
            Rule::NotUtf8 => "Headers Not UTF-8".into(),
            Rule::BadStartLine => "Malformed Start Line".into(),
            Rule::UnsupportedVersion => "Version Not Supported".into(),
            Rule::BadStatusCode => "Bad Status Code".into(),
            Rule::BadRequestUri => "Bad Request-URI".into(),
            Rule::UnsupportedUriScheme => "Unsupported URI Scheme".into(),
            Rule::MalformedHeader => "Malformed Header Line".into(),
            Rule::TooManyHeaders => "Too Many Headers".into(),
            Rule::BadContentLength => "Bad Content-Length".into(),
            Rule::ContentLengthExceedsBody => "Content-Length Exceeds Body".into(),
            Rule::MissingHeader(h) => format!("Missing {h}"),
            Rule::DuplicateHeader(h) => format!("Multiple {h}"),
            Rule::BadHeaderValue(h) => format!("Bad {h}"),
            Rule::CSeqMethodMismatch => "CSeq Method Mismatch".into(),
            Rule::MissingContentType => "Missing Content-Type".into(),
            Rule::BadExtension(_) => "Bad Extension".into(),
            Rule::ExtraViaInResponse => "More Than One Via In Response".into(),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

/// Why a message was refused, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub rule: Rule,
    pub action: Action,
}

impl Rejection {
    /// A rejection of a request (answered) or of a response (dropped: responses are never
    /// answered, §18.1.2 and RFC 4475 §3.1.2.19).
    pub fn new(rule: Rule, is_response: bool) -> Self {
        let action = if is_response {
            Action::Drop
        } else {
            Action::Reply(rule.status())
        };
        Rejection { rule, action }
    }

    pub(super) fn drop(rule: Rule) -> Self {
        Rejection {
            rule,
            action: Action::Drop,
        }
    }
}

/// Size limits applied while parsing. Defaults suit a public-facing server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message, head and body (bytes). Larger requests get 513.
    pub max_message_size: usize,
    /// Largest body (bytes). Larger requests get 413.
    pub max_body_size: usize,
    /// Most header field values (after splitting comma lists).
    pub max_headers: usize,
    /// Option tags we support; a Require naming another gets 420 (§8.2.2.3).
    pub supported_extensions: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_body_size: 60 * 1024,
            max_headers: 256,
            supported_extensions: Vec::new(),
        }
    }
}
