//! Typed views of the header fields the core reasons about: Via, CSeq, and the name-addr of
//! From, To and Contact. Each parser returns `None` for anything that is not well-formed.

use super::lex::{find_plain, is_token_char, lex, parse_decimal, quotes_closed, ByteClass, Part};
use super::Method;
use std::borrow::Cow;

/// A header or URI parameter: `name` or `name=value` (quotes kept on quoted values).
pub type Param = (String, Option<String>);

/// An unquoted parameter value: a token, or a host (`[` `]` `:` of an IPv6 reference).
const PARAM_VALUE: ByteClass = ByteClass::alphanumeric_and(b"-.!%*_+`'~[]:");

/// Walks `;a=1;b;c="x;y"` (the leading `;` optional), checking each parameter and handing
/// its name and value (quotes kept) to `each`; `false` when one is malformed.
fn walk_params<'a>(s: &'a str, mut each: impl FnMut(&'a str, Option<&'a str>)) -> bool {
    let s = s.trim_matches([' ', '\t']);
    if s.is_empty() {
        return true;
    }
    let Some(mut rest) = s.strip_prefix(';') else {
        return false;
    };
    loop {
        // This parameter ends at the next ';' outside quotes.
        let end = find_plain(rest, ';').unwrap_or(rest.len());
        if !quotes_closed(&rest[..end]) {
            return false;
        }
        let item = rest[..end].trim_matches([' ', '\t']);
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (
                n.trim_matches([' ', '\t']),
                Some(v.trim_matches([' ', '\t'])),
            ),
            None => (item, None),
        };
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return false;
        }
        if let Some(v) = value {
            let ok = if v.starts_with('"') {
                v.len() >= 2 && v.ends_with('"')
            } else {
                !v.is_empty() && v.bytes().all(|b| PARAM_VALUE.has(b))
            };
            if !ok {
                return false;
            }
        }
        each(name, value);
        if end == rest.len() {
            return true;
        }
        rest = &rest[end + 1..];
    }
}

/// Splits `;a=1;b;c="x;y"` into parameters (names lower-cased).
fn parse_params(s: &str) -> Option<Vec<Param>> {
    let mut params = Vec::new();
    walk_params(s, |n, v| {
        params.push((n.to_ascii_lowercase(), v.map(str::to_string)))
    })
    .then_some(params)
}

fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref().unwrap_or(""))
}

/// The value of parameter `name` in a header value such as `<sip:a@b>;tag=x` or
/// `SIP/2.0/UDP h;branch=y`. Parameters inside `<...>` are not looked at.
pub fn header_param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.find(';').map_or("", |i| &value[i..]),
    };
    for item in after.split(';').skip(1) {
        let (n, v) = item.split_once('=').unwrap_or((item, ""));
        if n.trim().eq_ignore_ascii_case(name) {
            return Some(v.trim());
        }
    }
    None
}

/// A host: a domain name, an IPv4 address or a bracketed IPv6 reference.
fn is_valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Splits `host[:port]`, validating both, without copying.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        let (h, rest) = s.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if rest.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !is_valid_host(host) {
        return None;
    }
    let port = match port {
        Some(p) => Some(parse_decimal(p, 65535)? as u16),
        None => None,
    };
    Some((host, port))
}

/// One Via header field value (§20.42): `SIP/2.0/UDP host:port;branch=...`, borrowed from
/// the header it was read from (a message's Vias are read on every step: nothing is copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// The transport token as written (UDP, TCP, TLS, SCTP, WS, WSS, ...; compare it
    /// case-insensitively).
    pub transport: &'a str,
    /// The sent-by host as written (host names compare case-insensitively).
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
    /// The parameters, checked well-formed: `;branch=z9hG4bK1;rport` (read with `param`).
    params: &'a str,
}

impl<'a> Via<'a> {
    pub fn parse(value: &'a str) -> Option<Via<'a>> {
        let (transport, sent_by, params) = Via::parts(value)?;
        let (host, port) = match sent_by {
            Cow::Borrowed(s) => {
                let (h, p) = split_host_port(s)?;
                (Cow::Borrowed(h), p)
            }
            Cow::Owned(s) => {
                let (h, p) = split_host_port(&s)?;
                (Cow::Owned(h.to_string()), p)
            }
        };
        walk_params(params, |_, _| {}).then_some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// Whether `value` is a well-formed Via (a parsed one copies nothing but a sent-by with
    /// LWS in it).
    pub(crate) fn is_valid(value: &str) -> bool {
        Via::parse(value).is_some()
    }

    /// The transport, sent-by (LWS around its colon removed) and parameters of a Via.
    fn parts(value: &'a str) -> Option<(&'a str, Cow<'a, str>, &'a str)> {
        let value = value.trim();
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, LWS allowed.
        let mut rest = value;
        let mut fields = [""; 3];
        for (i, slot) in fields.iter_mut().enumerate() {
            rest = rest.trim_start_matches([' ', '\t']);
            let end = rest
                .bytes()
                .position(|b| !is_token_char(b))
                .unwrap_or(rest.len());
            let (field, tail) = rest.split_at(end);
            if field.is_empty() {
                return None;
            }
            *slot = field;
            rest = tail;
            if i < 2 {
                rest = rest.trim_start_matches([' ', '\t']).strip_prefix('/')?;
            }
        }
        let [protocol, version, transport] = fields;
        if !protocol.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return None;
        }
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let params_at = rest.find(';').unwrap_or(rest.len());
        let sent_by = rest[..params_at].trim_end_matches([' ', '\t']);
        // LWS may surround the colon before the port, and nowhere else.
        let sent_by = if sent_by.contains([' ', '\t']) {
            let parts: Vec<&str> = sent_by
                .split(':')
                .map(|p| p.trim_matches([' ', '\t']))
                .collect();
            Cow::Owned(parts.join(":"))
        } else {
            Cow::Borrowed(sent_by)
        };
        if sent_by.contains([' ', '\t']) {
            return None;
        }
        Some((transport, sent_by, &rest[params_at..]))
    }

    /// The value of parameter `name` (case-insensitive; `""` for a flag such as `rport`).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        let mut found = None;
        walk_params(self.params, |n, v| {
            if found.is_none() && n.eq_ignore_ascii_case(name) {
                found = Some(v.unwrap_or(""));
            }
        });
        found
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch").filter(|b| !b.is_empty())
    }

    /// Whether a cluster member put this Via on a request it forwarded to the call's owner
    /// (`node::forward`).
    pub fn is_forwarding(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.starts_with(crate::ids::FORWARD_BRANCH))
    }

    /// `host:port` with the host lower-cased and the transport's default port filled in, for
    /// transaction matching.
    pub fn sent_by(&self) -> String {
        format!(
            "{}:{}",
            self.host.to_ascii_lowercase(),
            self.port_or_default()
        )
    }

    /// The sent-by port, or the transport's default.
    pub fn port_or_default(&self) -> u16 {
        let secure = ["TLS", "WSS"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(self.transport));
        self.port.unwrap_or(if secure { 5061 } else { 5060 })
    }
}

/// Where a response goes by its top Via `value` over UDP (§18.2.2, RFC 3581): the
/// `received` address (else the sent-by host, when it is an address) and the `rport` port
/// (else the sent-by port). `None` for a sent-by host name (the core does no DNS).
pub fn response_target(value: &str) -> Option<std::net::SocketAddr> {
    let via = Via::parse(value)?;
    let ip: std::net::IpAddr = match via.param("received") {
        Some(r) => r.parse().ok()?,
        None => via
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?,
    };
    let port = via
        .param("rport")
        .and_then(|p| p.parse::<u16>().ok())
        .or(via.port)
        .unwrap_or(5060);
    Some(std::net::SocketAddr::new(ip, port))
}

/// The CSeq header (§20.16): sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `num SP method`; the number must be below 2^31 (§8.1.1.5).
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut it = value.split([' ', '\t']).filter(|s| !s.is_empty());
        let seq = parse_decimal(it.next()?, (1u64 << 31) - 1)? as u32;
        let method = Method::from_token(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some(CSeq { seq, method })
    }
}

/// What kind of URI a string is, once its syntax has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriKind {
    Sip,
    Tel,
    Other,
}

/// Checks URI syntax: SIP and SIPS URIs by the grammar of §25.1 (our own reading: rsip 0.4
/// refuses valid URIs such as RFC 4475's `1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*`
/// user part and escaped headers), `tel:` and other absolute URIs by their generic shape.
/// `None` when the URI is malformed.
pub(crate) fn check_uri(uri: &str) -> Option<UriKind> {
    let (scheme, rest) = uri.split_once(':')?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok
        || rest.is_empty()
        || uri
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || matches!(b, b'<' | b'>' | b'"'))
    {
        return None;
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        check_sip_uri_rest(rest).then_some(UriKind::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        Some(UriKind::Tel)
    } else {
        Some(UriKind::Other)
    }
}

/// `unreserved` (alphanum / mark) of §25.1.
// §25.1 classes, each `unreserved` (alphanum / mark `-_.!~*'()`) plus its own extras.
const USER: ByteClass = ByteClass::alphanumeric_and(b"-_.!~*'()&=+$,;?/");
const PASSWORD: ByteClass = ByteClass::alphanumeric_and(b"-_.!~*'()&=+$,");
const PARAM_CHAR: ByteClass = ByteClass::alphanumeric_and(b"-_.!~*'()[]/:&+$");
const HNV_CHAR: ByteClass = ByteClass::alphanumeric_and(b"-_.!~*'()[]/?:+$");

/// Whether `s` is made of `escaped` octets and bytes for which `allowed` holds (at least
/// `min` bytes long).
fn escaped_or(s: &str, min: usize, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(|c| c.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    b.len() >= min
}

/// The part of a SIP URI after `sip:` (§25.1): `[userinfo "@"] hostport uri-parameters
/// [headers]`.
fn check_sip_uri_rest(rest: &str) -> bool {
    let (userinfo, after) = match rest.split_once('@') {
        Some((u, a)) => (Some(u), a),
        None => (None, rest),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let user_ok = escaped_or(user, 1, |b| USER.has(b));
        let password_ok = password.is_none_or(|p| escaped_or(p, 0, |b| PASSWORD.has(b)));
        if !(user_ok && password_ok) {
            return false;
        }
    }
    let (before_headers, headers) = match after.split_once('?') {
        Some((b, h)) => (b, Some(h)),
        None => (after, None),
    };
    let mut parts = before_headers.split(';');
    let hostport = parts.next().unwrap_or("");
    if split_host_port(hostport).is_none() {
        return false;
    }
    let paramchar = |b: u8| PARAM_CHAR.has(b);
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (param, None),
        };
        if !escaped_or(name, 1, paramchar) || !value.is_none_or(|v| escaped_or(v, 1, paramchar)) {
            return false;
        }
    }
    let hnv = |b: u8| HNV_CHAR.has(b);
    headers.is_none_or(|h| {
        h.split('&').all(|header| {
            header
                .split_once('=')
                .is_some_and(|(n, v)| escaped_or(n, 1, hnv) && escaped_or(v, 0, hnv))
        })
    })
}

/// A `name-addr` or `addr-spec` with header parameters (From, To, Contact, Route, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (quotes kept when quoted).
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<Param>,
}

impl NameAddr {
    /// Parses and checks the syntax of the value, including its URI.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let (display, uri, params) = NameAddr::parts(value)?;
        check_uri(uri)?;
        Some(NameAddr {
            display: display.map(str::to_string),
            uri: uri.to_string(),
            params: parse_params(params)?,
        })
    }

    /// Checks the syntax of the value as [`NameAddr::parse`] does, handing each header
    /// parameter to `each`, without building one.
    pub(crate) fn check<'a>(value: &'a str, each: impl FnMut(&'a str, Option<&'a str>)) -> bool {
        NameAddr::parts(value)
            .is_some_and(|(_, uri, params)| check_uri(uri).is_some() && walk_params(params, each))
    }

    /// The display name (quotes kept), URI and header parameters of a name-addr or
    /// addr-spec.
    fn parts(value: &str) -> Option<(Option<&str>, &str, &str)> {
        let v = value.trim_matches([' ', '\t']);
        let (display, after_display) = if v.starts_with('"') {
            // The quoted display name ends at its closing quote.
            let (end, _, _) = lex(v).skip(1).find(|&(_, _, p)| p == Part::Quote)?;
            (
                Some(&v[..=end]),
                v[end + 1..].trim_start_matches([' ', '\t']),
            )
        } else if let Some(lt) = v.find('<') {
            let d = v[..lt].trim_matches([' ', '\t']);
            let tokens_ok = d
                .split([' ', '\t'])
                .filter(|t| !t.is_empty())
                .all(|t| t.bytes().all(is_token_char));
            if !tokens_ok {
                return None;
            }
            ((!d.is_empty()).then_some(d), &v[lt..])
        } else {
            (None, v)
        };
        let (uri, params) = if let Some(inner) = after_display.strip_prefix('<') {
            let close = inner.find('>')?;
            (&inner[..close], &inner[close + 1..])
        } else {
            if display.is_some() {
                return None;
            }
            // addr-spec: parameters after ';' belong to the header (§20.10); a URI holding
            // ',', '?' or ';' of its own must be in angle brackets.
            let end = after_display.find(';').unwrap_or(after_display.len());
            // LWS may come before the ';' of a header parameter (SEMI = SWS ";" SWS).
            let uri = after_display[..end].trim_end_matches([' ', '\t']);
            if uri.contains(['?', ',', ' ', '\t']) {
                return None;
            }
            (uri, &after_display[end..])
        };
        Some((display, uri, params))
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_forms() {
        let v =
            Via::parse("SIP / 2.0 / udp host.Example.com:5062 ;branch=z9hG4bK776;rport").unwrap();
        assert_eq!(v.transport, "udp");
        assert_eq!(v.host, "host.Example.com");
        assert_eq!(v.sent_by(), "host.example.com:5062");
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert_eq!(v.param("rport"), Some(""));
        let v6 = Via::parse("SIP/2.0/TLS [2001:db8::9:1];branch=z9hG4bKx").unwrap();
        assert_eq!(v6.sent_by(), "[2001:db8::9:1]:5061");
        for bad in [
            "SIP/2.0/UDP",
            "SIP/3.0/UDP h",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h;;branch=x",
            "SIP/2.0/UDP h j",
            "SIP/2.0/UDP [::1",
        ] {
            assert!(Via::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cseq_forms() {
        assert_eq!(
            CSeq::parse("4711 INVITE"),
            Some(CSeq {
                seq: 4711,
                method: Method::Invite
            })
        );
        assert!(CSeq::parse("2147483648 INVITE").is_none());
        assert!(CSeq::parse("-1 INVITE").is_none());
        assert!(CSeq::parse("1").is_none());
        assert!(CSeq::parse("1 INVITE x").is_none());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""Bob \"B\"" <sip:bob@biloxi.com;lr>;tag=a6c85cf"#).unwrap();
        assert_eq!(n.tag(), Some("a6c85cf"));
        assert_eq!(n.uri, "sip:bob@biloxi.com;lr");
        let n = NameAddr::parse("sip:carol@chicago.com;tag=x").unwrap();
        assert_eq!(
            (n.uri.as_str(), n.tag()),
            ("sip:carol@chicago.com", Some("x"))
        );
        let n = NameAddr::parse("Alice Smith<tel:+1-555>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Alice Smith"));
        assert!(NameAddr::parse("<http://example.com/x>").is_some());
        for bad in [
            r#""unterminated <sip:a@b>"#,
            "sip:a@b?Route=x",
            "Bob <sip:a@b",
            "sip:user@ host",
            "Bob@x <sip:a@b>",
            "<sip:>",
        ] {
            assert!(NameAddr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sip_uris_follow_the_grammar_of_25_1() {
        for ok in [
            "sip:host",
            "sip:user@host:5060;transport=tcp;lr",
            "sip:user:pa$$@host",
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com",
            "sip:user;par=u%40example.net@example.com",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E&Subject=",
            "sip:null-%00-null@example.com",
            "sip:alice@[2001:db8::1]:5060",
        ] {
            assert_eq!(check_uri(ok), Some(UriKind::Sip), "{ok}");
        }
        for bad in [
            "sip:",
            "sip:@host",
            "sip:a%zz@host",
            "sip:a@b@host",
            "sip:user@host;=x",
            "sip:user@host;p=",
            "sip:user@host?noequals",
            "sip:user@ho st",
            "sip:user@host:99999",
            "sip:user@[::1",
        ] {
            assert_eq!(check_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn ipv6_sip_uris_are_checked_although_rsip_cannot_parse_them() {
        assert!(
            rsip::Uri::try_from("sip:user@[2001:db8::9:1]").is_err(),
            "rsip fixed?"
        );
        assert_eq!(
            check_uri("sip:user@[2001:db8::9:1]:5060;lr"),
            Some(UriKind::Sip)
        );
        assert_eq!(check_uri("sip:[2001:db8::10]"), Some(UriKind::Sip));
        assert_eq!(check_uri("sip:user@[2001:db8::zz]"), None);
    }

    #[test]
    fn header_param_ignores_uri_params() {
        assert_eq!(header_param("<sip:a@b;tag=no>;tag=yes", "tag"), Some("yes"));
        assert_eq!(header_param("<sip:a@b;tag=no>", "tag"), None);
        assert_eq!(header_param("sip:a@b;tag=t1", "tag"), Some("t1"));
    }
}
