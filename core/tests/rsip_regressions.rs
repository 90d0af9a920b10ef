//! Where rsip 0.4 is wrong, and what Drongo's message layer does instead. Each case asserts
//! rsip's behaviour too, so that a fixed rsip shows up here.

use drongo_core::message::{parse_and_validate, parse_datagram, Limits, SipMessage};

const HEAD: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n\
CSeq: 1 OPTIONS\r\n";

fn ours(text: &str) -> SipMessage {
    parse_and_validate(text.as_bytes(), &Limits::default()).expect("valid")
}

#[test]
fn content_length_bounds_the_body() {
    let text = format!("{HEAD}Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhiEXTRA");
    let r = rsip::SipMessage::try_from(text.as_str()).unwrap();
    assert_eq!(
        r.body(),
        b"hiEXTRA",
        "rsip takes everything after the blank line"
    );
    assert_eq!(ours(&text).body(), b"hi");
    // And a Content-Length larger than what arrived is an error, not a short body.
    let short = format!("{HEAD}Content-Type: text/plain\r\nContent-Length: 20\r\n\r\nhi");
    assert!(rsip::SipMessage::try_from(short.as_str()).is_ok());
    assert!(parse_datagram(short.as_bytes(), &Limits::default()).is_err());
}

#[test]
fn lf_only_line_ends() {
    let text = format!("{HEAD}Content-Length: 0\r\n\r\n").replace("\r\n", "\n");
    assert!(
        rsip::SipMessage::try_from(text.as_str()).is_err(),
        "rsip rejects LF-only"
    );
    assert!(matches!(ours(&text), SipMessage::Request(_)));
}

#[test]
fn folded_header_lines() {
    let text = format!("{HEAD}Subject: one\r\n two\r\nContent-Length: 0\r\n\r\n");
    let rsip_ok = rsip::SipMessage::try_from(text.as_str())
        .map(|m| m.to_string().contains("Subject: one two"))
        .unwrap_or(false);
    assert!(!rsip_ok, "rsip does not unfold");
    assert_eq!(ours(&text).headers().get("Subject"), Some("one two"));
}

#[test]
fn whitespace_before_the_colon() {
    let text = format!("{HEAD}Subject : x\r\nContent-Length: 0\r\n\r\n");
    assert!(
        rsip::SipMessage::try_from(text.as_str()).is_err(),
        "rsip rejects `Name :`"
    );
    assert_eq!(ours(&text).headers().get("Subject"), Some("x"));
}

#[test]
fn lr_parameter_with_a_value() {
    use rsip::{param::Param, Uri};
    let uri = Uri::try_from("sip:proxy.example.com;lr=on").unwrap();
    assert!(
        !uri.params.iter().any(|p| matches!(p, Param::Lr)),
        "rsip does not see `lr=on` as lr"
    );
    // Our header parameters keep name and value apart.
    let route = drongo_core::message::NameAddr::parse("<sip:proxy.example.com;lr=on>").unwrap();
    assert_eq!(route.uri, "sip:proxy.example.com;lr=on");
}

#[test]
fn compact_header_names() {
    let text = "OPTIONS sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                Max-Forwards: 70\r\nf: <sip:a@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\n\
                i: c1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
    let r = rsip::SipMessage::try_from(text).unwrap();
    assert!(
        !r.to_string().contains("Call-ID"),
        "rsip keeps compact names as unknown headers"
    );
    assert_eq!(ours(text).headers().get("Call-ID"), Some("c1"));
}
