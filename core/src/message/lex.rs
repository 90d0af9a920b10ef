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
    lex(s).filter(|(_, _, p)| *p == Part::Quote).count() % 2 == 0
}

/// The index of the first `c` in `s` outside quoted strings.
pub(crate) fn find_plain(s: &str, c: char) -> Option<usize> {
    lex(s)
        .find(|&(_, ch, p)| p == Part::Plain && ch == c)
        .map(|(i, _, _)| i)
}

/// `token` characters of RFC 3261 §25.1.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Parses a decimal number of at most `max`; `None` for anything else (sign, space, overflow).
pub(crate) fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|v| *v <= max)
}

/// Splits a header value at commas that are outside quoted strings and angle brackets.
pub(crate) fn split_list(value: &str) -> Option<Vec<&str>> {
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
}
