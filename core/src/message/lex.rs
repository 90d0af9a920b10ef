//! The lexical pieces of RFC 3261 §25.1 every parser of the message layer shares: token
//! characters, decimal numbers, and one scanner of quoted strings and quoted-pairs, so that
//! "is this comma (semicolon, control character) inside quotes?" has one answer.

/// What part of a header value a character is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Outside any quoted string.
    Plain,
    /// A quote mark that opens or closes a quoted string.
    Quote,
    /// Inside a quoted string (the backslash of a quoted-pair included).
    InQuotes,
    /// The escaped character of a quoted-pair (`\x`).
    Escaped,
}

/// Compact forms (§7.3.3 and later RFCs), by their letter.
const COMPACT: &[(u8, &str)] = &[
    (b'i', "Call-ID"),
    (b'm', "Contact"),
    (b'e', "Content-Encoding"),
    (b'l', "Content-Length"),
    (b'c', "Content-Type"),
    (b'f', "From"),
    (b's', "Subject"),
    (b'k', "Supported"),
    (b't', "To"),
    (b'v', "Via"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b'b', "Referred-By"),
    (b'u', "Allow-Events"),
    (b'x', "Session-Expires"),
    (b'a', "Accept-Contact"),
    (b'j', "Reject-Contact"),
    (b'd', "Request-Disposition"),
    (b'y', "Identity"),
];

/// The header names the core knows, in their canonical spelling: the list, and an exact
/// match on it (which the compiler turns into a dispatch on length and bytes; most
/// messages spell names canonically).
macro_rules! known_names {
    ($($name:literal),* $(,)?) => {
        const KNOWN: &[&str] = &[$($name),*];

        fn exact_name(name: &str) -> Option<&'static str> {
            match name {
                $($name => Some($name),)*
                _ => None,
            }
        }
    };
}

known_names!(
    "Accept",
    "Allow",
    "Authorization",
    "Call-ID",
    "Contact",
    "Content-Encoding",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Expires",
    "From",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Require",
    "Retry-After",
    "Route",
    "Session-Expires",
    "Supported",
    "To",
    "Unsupported",
    "Via",
    "WWW-Authenticate",
);

/// The canonical spelling of a header name given in any case, or of its compact form;
/// `None` for a name the core does not know (it is kept as written).
pub(crate) fn canonical_name(name: &str) -> Option<&'static str> {
    if let Some(n) = exact_name(name) {
        return Some(n);
    }
    let first = name.as_bytes().first()?.to_ascii_lowercase();
    if name.len() == 1 {
        return COMPACT.iter().find(|(c, _)| *c == first).map(|(_, n)| *n);
    }
    KNOWN
        .iter()
        .find(|k| {
            k.len() == name.len()
                && k.as_bytes().first().map(u8::to_ascii_lowercase) == Some(first)
                && k.eq_ignore_ascii_case(name)
        })
        .copied()
}

/// Each character of `s` with its byte index and the part of the value it is in.
pub(crate) fn lex(s: &str) -> impl Iterator<Item = (usize, char, Part)> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    s.char_indices().map(move |(i, c)| {
        let part = if escaped {
            escaped = false;
            Part::Escaped
        } else if quoted {
            match c {
                '\\' => {
                    escaped = true;
                    Part::InQuotes
                }
                '"' => {
                    quoted = false;
                    Part::Quote
                }
                _ => Part::InQuotes,
            }
        } else if c == '"' {
            quoted = true;
            Part::Quote
        } else {
            Part::Plain
        };
        (i, c, part)
    })
}

/// Whether every quoted string in `s` is closed.
pub(crate) fn quotes_closed(s: &str) -> bool {
    if memchr::memchr(b'"', s.as_bytes()).is_none() {
        return true;
    }
    lex(s).filter(|(_, _, p)| *p == Part::Quote).count() % 2 == 0
}

/// The index of the first `c` in `s` outside quoted strings.
pub(crate) fn find_plain(s: &str, c: char) -> Option<usize> {
    // Without a quote every character is plain (a backslash escapes only inside quotes):
    // the common case, found without walking characters.
    if c.is_ascii() && memchr::memchr(b'"', s.as_bytes()).is_none() {
        return memchr::memchr(c as u8, s.as_bytes());
    }
    lex(s)
        .find(|&(_, ch, p)| p == Part::Plain && ch == c)
        .map(|(i, _, _)| i)
}

/// `token` characters of RFC 3261 §25.1.
pub(crate) fn is_token_char(b: u8) -> bool {
    TOKEN.has(b)
}

/// A set of bytes, looked up in one step (character classes of §25.1 are tested for every
/// byte of every header).
pub(crate) struct ByteClass([bool; 256]);

impl ByteClass {
    /// Letters, digits and `extra`.
    pub(crate) const fn alphanumeric_and(extra: &[u8]) -> ByteClass {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            t[extra[i] as usize] = true;
            i += 1;
        }
        ByteClass(t)
    }

    pub(crate) fn has(&self, b: u8) -> bool {
        self.0[usize::from(b)]
    }
}

const TOKEN: ByteClass = ByteClass::alphanumeric_and(b"-.!%*_+`'~");

/// Parses a decimal number of at most `max`; `None` for anything else (sign, space, overflow).
pub(crate) fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| *v <= max)
}

/// Splits a header value at commas that are outside quoted strings and angle brackets.
pub(crate) fn split_list(value: &str) -> Option<Vec<&str>> {
    if memchr::memchr(b',', value.as_bytes()).is_none() {
        // One value: the common case, with no quotes to scan.
        let v = value.trim_matches([' ', '\t']);
        return (!v.is_empty()).then(|| vec![v]);
    }
    let mut parts = Vec::new();
    let (mut angle, mut start) = (false, 0);
    for (i, c, part) in lex(value) {
        match (part, c) {
            (Part::Plain, '<') => angle = true,
            (Part::Plain, '>') => angle = false,
            (Part::Plain, ',') if !angle => {
                parts.push(value[start..i].trim_matches([' ', '\t']));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim_matches([' ', '\t']));
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""a, \"b" <sip:x@y;p=1,2>;q=1 , <sip:z>"#).unwrap(),
            [r#""a, \"b" <sip:x@y;p=1,2>;q=1"#, "<sip:z>"]
        );
        assert!(split_list("a,,b").is_none());
    }

    #[test]
    fn plain_characters_with_and_without_quotes() {
        assert_eq!(find_plain(";a=1;b", ';'), Some(0));
        assert_eq!(find_plain("a=1;b", ';'), Some(3));
        assert_eq!(find_plain("a=\"x;y\";b", ';'), Some(7));
        assert_eq!(find_plain("a=\"x;y", ';'), None);
        assert_eq!(
            find_plain("a\\;b", ';'),
            Some(2),
            "a backslash outside quotes"
        );
        assert!(quotes_closed("a=1;b") && quotes_closed("a=\"x\\\"y\""));
        assert!(!quotes_closed("a=\"x"));
    }
}
