//! Parsing one SIP message from bytes (RFC 3261 §7 and §18.3).
//!
//! The grammar work that rsip 0.4 gets wrong is done here: leading CRLFs, LF-only line ends,
//! header line folding, whitespace before the colon, compact header names, comma-separated
//! list headers, and Content-Length framing of the body.

use super::lex::{canonical_name, is_token_char, lex, parse_decimal, split_list, Part};
use super::rules::{Action, Limits, Rejection, Rule};
use super::{Header, Headers, Method, Request, Response, SipMessage};
use std::borrow::Cow;

/// Headers whose values may be comma-separated lists that we keep one value per header.
fn is_list_header(name: &str) -> bool {
    ["Via", "Route", "Record-Route", "Contact"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

fn reject(rule: Rule, is_response: bool) -> Rejection {
    Rejection::new(rule, is_response)
}

/// Whether the start of `bytes` (after leading CRLFs) looks like a response.
fn looks_like_response(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4].eq_ignore_ascii_case(b"SIP/")
}

/// Skips the CRLFs (or bare LFs) that may precede a start line (§7.5).
pub(crate) fn skip_leading_crlf(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    &bytes[n..]
}

/// Finds the end of the header section: returns (head length without the blank line,
/// offset where the body starts). Accepts CRLF and LF-only line ends. The blank line is the
/// first LF followed by CRLF or by LF; `bytes` does not start with one (see
/// [`skip_leading_crlf`]).
pub(crate) fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    // Line ends are few (one a header): looking at what follows each is cheaper than
    // setting up two substring searches.
    memchr::memchr_iter(b'\n', bytes).find_map(|i| match bytes.get(i + 1..i + 3) {
        Some([b'\n', _]) => Some((i + 1, i + 2)),
        Some([b'\r', b'\n']) => Some((i + 1, i + 3)),
        None if bytes.get(i + 1) == Some(&b'\n') => Some((i + 1, i + 2)),
        _ => None,
    })
}

/// Parses one message received as a datagram (or one frame cut from a stream).
///
/// The body is what Content-Length says; bytes past it are discarded (§18.3), and a
/// Content-Length larger than what arrived is an error. A message without Content-Length
/// takes the rest of the datagram as its body. The parsed message always carries exactly one
/// Content-Length, equal to its body's length, so that it serializes and re-parses the same.
pub fn parse_datagram(bytes: &[u8], limits: &Limits) -> Result<SipMessage, Rejection> {
    let bytes = skip_leading_crlf(bytes);
    let is_response = looks_like_response(bytes);
    if bytes.is_empty() {
        return Err(Rejection {
            rule: Rule::Empty,
            action: Action::Drop,
        });
    }
    if bytes.len() > limits.max_message_size {
        return Err(reject(Rule::MessageTooLarge, is_response));
    }
    let (head_len, body_start) =
        find_head_end(bytes).ok_or_else(|| reject(Rule::MissingBlankLine, is_response))?;
    let head = &bytes[..head_len];
    let raw_body = &bytes[body_start..];

    let head = std::str::from_utf8(head).map_err(|_| reject(Rule::NotUtf8, is_response))?;
    let head = head.strip_suffix('\n').unwrap_or(head);
    let head = head.strip_suffix('\r').unwrap_or(head);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or("");
    let headers = parse_headers(lines, limits, is_response)?;

    let declared = content_length(&headers, is_response)?;
    let body = match declared {
        Some(len) if len > raw_body.len() => {
            return Err(reject(Rule::ContentLengthExceedsBody, is_response))
        }
        Some(len) => &raw_body[..len],
        None => raw_body,
    };
    if body.len() > limits.max_body_size {
        return Err(reject(Rule::BodyTooLarge, is_response));
    }
    let mut headers = headers;
    // One Content-Length saying the body's length, written as we would write it, stays.
    let canonical = declared.is_some()
        && headers
            .get("Content-Length")
            .is_some_and(|v| v == "0" || !v.starts_with('0'));
    if !canonical {
        headers.set("Content-Length", body.len().to_string());
    }
    // The Content-Length we add counts too, so that our own output parses again.
    if headers.len() > limits.max_headers {
        return Err(reject(Rule::TooManyHeaders, is_response));
    }

    if is_response {
        let (code, reason) = parse_status_line(start_line)?;
        Ok(SipMessage::Response(Response {
            code,
            reason,
            headers,
            body: body.to_vec(),
        }))
    } else {
        let (method, uri) = parse_request_line(start_line)?;
        Ok(SipMessage::Request(Request {
            method,
            uri,
            headers,
            body: body.to_vec(),
        }))
    }
}

fn check_version(version: &str, is_response: bool) -> Result<(), Rejection> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = version
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && version
            .get(4..)
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(a, b)| numeric(a) && numeric(b));
    Err(reject(
        if well_formed {
            Rule::UnsupportedVersion
        } else {
            Rule::BadStartLine
        },
        is_response,
    ))
}

/// `Method SP Request-URI SP SIP-Version`, single spaces, nothing else (RFC 4475 §3.1.2.8/9).
fn parse_request_line(line: &str) -> Result<(Method, String), Rejection> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(Rule::BadStartLine, false));
    };
    let method = Method::from_token(method).ok_or(reject(Rule::BadStartLine, false))?;
    if uri.is_empty() || uri.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(reject(Rule::BadRequestUri, false));
    }
    check_version(version, false)?;
    Ok((method, uri.to_string()))
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`; a bad status line means drop.
fn parse_status_line(line: &str) -> Result<(u16, String), Rejection> {
    let (version, rest) = line
        .split_once(' ')
        .ok_or(reject(Rule::BadStartLine, true))?;
    check_version(version, true)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(reject(Rule::BadStatusCode, true));
    }
    let code: u16 = code
        .parse()
        .map_err(|_| reject(Rule::BadStatusCode, true))?;
    if !(100..=699).contains(&code) {
        return Err(reject(Rule::BadStatusCode, true));
    }
    if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(reject(Rule::BadStartLine, true));
    }
    Ok((code, reason.to_string()))
}

fn parse_headers<'a>(
    lines: impl Iterator<Item = &'a str>,
    limits: &Limits,
    is_response: bool,
) -> Result<Headers, Rejection> {
    // First undo folding (§7.3.1): a line starting with SP or HT continues the previous one.
    let mut raw: Vec<(&'a str, Cow<'a, str>)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let Some(last) = raw.last_mut() else {
                return Err(reject(Rule::MalformedHeader, is_response));
            };
            let cont = line.trim_matches([' ', '\t']);
            if !cont.is_empty() {
                let value = last.1.to_mut();
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(cont);
            }
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(reject(Rule::MalformedHeader, is_response))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(reject(Rule::MalformedHeader, is_response));
        }
        raw.push((name, Cow::Borrowed(value.trim_matches([' ', '\t']))));
        if raw.len() > limits.max_headers {
            return Err(reject(Rule::TooManyHeaders, is_response));
        }
    }
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if has_bare_control(&value) {
            return Err(reject(Rule::MalformedHeader, is_response));
        }
        let name: Cow<'static, str> = match canonical_name(name) {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(name.to_string()),
        };
        if is_list_header(&name) && value != "*" {
            let parts = split_list(&value).ok_or(reject(Rule::MalformedHeader, is_response))?;
            for part in parts {
                headers.push(Header {
                    name: name.clone(),
                    value: part.to_string(),
                });
            }
        } else {
            let value = value.into_owned();
            headers.push(Header { name, value });
        }
        if headers.len() > limits.max_headers {
            return Err(reject(Rule::TooManyHeaders, is_response));
        }
    }
    Ok(Headers(headers))
}

/// Whether `value` holds a control character (HTAB aside) that is not the second octet of a
/// quoted-pair inside a quoted string: §25.1 allows `"\" (%x00-09 / %x0B-0C / %x0E-7F)` there
/// (RFC 4475 §3.1.1.2 has BEL, NUL and DEL so escaped in a display name), and nowhere else.
fn has_bare_control(value: &str) -> bool {
    // Almost no value holds a control character at all: the quoted-pair scan is for those.
    // (A fold without early exit, so that it runs on whole vectors.)
    let any_control = value.bytes().fold(false, |seen, b| {
        seen | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    });
    if !any_control {
        return false;
    }
    // CR and LF cannot be here at all: lines were split on them.
    lex(value).any(|(_, c, part)| part != Part::Escaped && c != '\t' && c.is_ascii_control())
}

/// The Content-Length, checking that every copy agrees (RFC 4475 §3.3.9).
fn content_length(headers: &Headers, is_response: bool) -> Result<Option<usize>, Rejection> {
    let mut found: Option<u64> = None;
    for value in headers.get_all("Content-Length") {
        let v = parse_decimal(value, u32::MAX as u64)
            .ok_or(reject(Rule::BadContentLength, is_response))?;
        if found.is_some_and(|f| f != v) {
            return Err(reject(Rule::BadContentLength, is_response));
        }
        found = Some(v);
    }
    if headers.count("Content-Length") > 1 {
        return Err(reject(Rule::DuplicateHeader("Content-Length"), is_response));
    }
    Ok(found.map(|v| v as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SipMessage, Rejection> {
        parse_datagram(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn content_length_is_rewritten_unless_already_in_our_spelling() {
        let msg = |cl: &str| {
            format!(
                "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
                 {cl}\r\n\r\nbody"
            )
        };
        for (given, kept) in [
            ("Content-Length: 4", "4"),
            ("Content-Length: 04", "4"),
            ("l: 4", "4"),
            ("Max-Forwards: 70", "4"),
        ] {
            let m = parse(&msg(given)).unwrap();
            assert_eq!(
                m.headers().get_all("Content-Length").collect::<Vec<_>>(),
                [kept],
                "{given}"
            );
        }
    }

    #[test]
    fn folding_compact_names_lf_only_and_space_before_colon() {
        let m = parse(
            "\r\nOPTIONS sip:bob@example.com SIP/2.0\n\
             v : SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2\n\
             Subject: first\n  \tsecond\n\
             l: 4\n\
             \n\
             bodyEXTRA",
        )
        .unwrap();
        let SipMessage::Request(r) = m else { panic!() };
        assert_eq!(r.method, Method::Options);
        let vias: Vec<&str> = r.headers.get_all("Via").collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
                "SIP/2.0/TCP b.example.com;branch=z9hG4bK2"
            ]
        );
        assert_eq!(r.headers.get("Subject"), Some("first second"));
        assert_eq!(r.body, b"body");
        assert_eq!(r.headers.get("Content-Length"), Some("4"));
    }

    #[test]
    fn content_length_larger_than_datagram_is_400_for_requests_and_drop_for_responses() {
        let e = parse("BYE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert_eq!(e.rule, Rule::ContentLengthExceedsBody);
        assert_eq!(e.action, Action::Reply(400));
        let e = parse("SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert_eq!(e.action, Action::Drop);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_of_either_kind() {
        for (bytes, end) in [
            (&b"A\r\n\r\nbody"[..], Some((3, 5))),
            (b"A\n\nbody", Some((2, 3))),
            (b"A\n\n", Some((2, 3))),
            (b"A\r\nB\n\r\n", Some((5, 7))),
            (b"A\nB\n\nC\r\n\r\n", Some((4, 5))),
            (b"A\r\nB\r\n", None),
            (b"A\n\r", None),
            (b"", None),
        ] {
            assert_eq!(
                find_head_end(bytes),
                end,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn request_line_rules() {
        let bad = |s: &str| parse(s).unwrap_err();
        assert_eq!(
            bad("INVITE  sip:a@b SIP/2.0\r\n\r\n").rule,
            Rule::BadStartLine
        );
        assert_eq!(
            bad("INVITE sip:a@b SIP/7.0\r\n\r\n").action,
            Action::Reply(505)
        );
        assert_eq!(bad("INVITE sip:a@b\r\n\r\n").rule, Rule::BadStartLine);
        assert_eq!(
            bad("SIP/2.0 4294967301 OK\r\n\r\n").rule,
            Rule::BadStatusCode
        );
        assert_eq!(bad("SIP/2.0 099 x\r\n\r\n").action, Action::Drop);
    }

    #[test]
    fn fuzz_regressions() {
        // A multi-byte character where the version's "SIP/" prefix was sliced (found by the
        // `parse` fuzz target).
        let e = parse("ONI p:oxoxiim SIP\u{466}e.\n\r\n").unwrap_err();
        assert_eq!(e.rule, Rule::BadStartLine);
        // Exactly the header limit and no Content-Length: the one we add must not push our
        // own serialization over the limit.
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let msg = b"SIP/2.0 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let e = parse_datagram(msg, &limits).unwrap_err();
        assert_eq!(e.rule, Rule::TooManyHeaders);
    }

    #[test]
    fn limits() {
        let big = format!("MESSAGE sip:a@b SIP/2.0\r\n\r\n{}", "x".repeat(70_000));
        assert_eq!(parse(&big).unwrap_err().action, Action::Reply(513));
        let limits = Limits {
            max_body_size: 10,
            ..Limits::default()
        };
        let e =
            parse_datagram(b"MESSAGE sip:a@b SIP/2.0\r\n\r\n0123456789ab", &limits).unwrap_err();
        assert_eq!(e.action, Action::Reply(413));
        let many = format!(
            "OPTIONS sip:a@b SIP/2.0\r\n{}\r\n",
            "X-A: 1\r\n".repeat(300)
        );
        assert_eq!(parse(&many).unwrap_err().rule, Rule::TooManyHeaders);
    }
}
