//! RFC 4475 (SIP torture test messages), section 3: every message of the RFC, verbatim in
//! `tests/rfc4475/` (CRLF line ends; the RFC's `<hex>` octets written as the octets they
//! stand for), with what the RFC says a receiving element does with it. The verdict is the
//! message layer's (`sipcheck`'s line): `valid`, `invalid CODE` (answered with that status)
//! or `drop`. Where the RFC leaves a choice ("an element could choose to be liberal"), the
//! table says which one Drongo takes.
//!
//! 3.1.1.11 (mpart01) is missing: its body is 553 octets of binary S/MIME that could not be
//! recovered here from the RFC's text.

use drongo_core::message::{parse_and_validate, Action, Limits, SipMessage};
use std::path::PathBuf;

/// (file stem, expected verdict, why)
const EXPECTED: &[(&str, &str, &str)] = &[
    ("3.1.1.1-wsinv", "valid", "short tortuous INVITE"),
    ("3.1.1.2-intmeth", "valid", "wide range of valid characters"),
    ("3.1.1.3-esc01", "valid", "valid use of % escaping"),
    ("3.1.1.4-escnull", "valid", "escaped nulls in URIs"),
    ("3.1.1.5-esc02", "valid", "% that is not an escape"),
    (
        "3.1.1.6-lwsdisp",
        "valid",
        "no LWS between display name and <",
    ),
    ("3.1.1.7-longreq", "valid", "long values in header fields"),
    (
        "3.1.1.8-dblreq",
        "valid",
        "extra trailing octets in a UDP datagram",
    ),
    (
        "3.1.1.9-semiuri",
        "valid",
        "semicolon-separated parameters in the user part",
    ),
    (
        "3.1.1.10-transports",
        "valid",
        "varied and unknown transport types",
    ),
    ("3.1.1.12-unreason", "valid", "unusual reason phrase"),
    ("3.1.1.13-noreason", "valid", "empty reason phrase"),
    (
        "3.1.2.1-badinv01",
        "invalid 400",
        "extraneous header field separators",
    ),
    (
        "3.1.2.2-clerr",
        "invalid 400",
        "Content-Length larger than the message",
    ),
    ("3.1.2.3-ncl", "invalid 400", "negative Content-Length"),
    (
        "3.1.2.4-scalar02",
        "invalid 400",
        "request scalar fields with overlarge values",
    ),
    (
        "3.1.2.5-scalarlg",
        "drop",
        "response scalar fields with overlarge values",
    ),
    (
        "3.1.2.6-quotbal",
        "invalid 400",
        "unterminated quoted string in display name",
    ),
    (
        "3.1.2.7-ltgtruri",
        "invalid 400",
        "<> enclosing Request-URI",
    ),
    (
        "3.1.2.8-lwsruri",
        "invalid 400",
        "malformed SIP Request-URI (embedded LWS)",
    ),
    (
        "3.1.2.9-lwsstart",
        "invalid 400",
        "multiple SP separating Request-Line elements",
    ),
    (
        "3.1.2.10-trws",
        "invalid 400",
        "SP characters at end of Request-Line",
    ),
    (
        "3.1.2.11-escruri",
        "valid",
        "escaped headers in SIP Request-URI: liberal (the B2BUA never forwards them)",
    ),
    (
        "3.1.2.12-baddate",
        "valid",
        "invalid time zone in Date: liberal (the node does not use Date)",
    ),
    (
        "3.1.2.13-regbadct",
        "invalid 400",
        "name-addr URI with '?' not in <>: not liberal, the header would be ambiguous",
    ),
    (
        "3.1.2.14-badaspec",
        "invalid 400",
        "spaces within addr-spec",
    ),
    (
        "3.1.2.15-baddn",
        "invalid 400",
        "non-token characters in display name",
    ),
    (
        "3.1.2.16-badvers",
        "invalid 505",
        "unknown protocol version",
    ),
    (
        "3.1.2.17-mismatch01",
        "invalid 400",
        "start line and CSeq method mismatch",
    ),
    (
        "3.1.2.18-mismatch02",
        "invalid 400",
        "unknown method with CSeq method mismatch",
    ),
    ("3.1.2.19-bigcode", "drop", "overlarge response code"),
    (
        "3.2.1-badbranch",
        "valid",
        "missing transaction identifier: RFC 2543 matching",
    ),
    (
        "3.3.1-insuf",
        "invalid 400",
        "missing required header fields",
    ),
    (
        "3.3.2-unkscm",
        "invalid 416",
        "Request-URI with unknown scheme",
    ),
    (
        "3.3.3-novelsc",
        "invalid 416",
        "Request-URI with known but atypical scheme",
    ),
    (
        "3.3.4-unksm2",
        "valid",
        "unknown URI schemes in header fields (the registrar answers)",
    ),
    (
        "3.3.5-bext01",
        "invalid 420",
        "Proxy-Require and Require: 420 for Require",
    ),
    (
        "3.3.6-invut",
        "valid",
        "unknown Content-Type (the B2BUA relays the body)",
    ),
    (
        "3.3.7-regaut01",
        "valid",
        "unknown authorization scheme (the registrar answers)",
    ),
    (
        "3.3.8-multi01",
        "invalid 400",
        "multiple values in single value required fields",
    ),
    (
        "3.3.9-mcl01",
        "invalid 400",
        "multiple Content-Length values",
    ),
    (
        "3.3.10-bcast",
        "drop",
        "200 OK with broadcast Via: a response with two Vias is not ours",
    ),
    (
        "3.3.11-zeromf",
        "valid",
        "Max-Forwards of zero (a UAS answers it)",
    ),
    (
        "3.3.12-cparam01",
        "valid",
        "REGISTER with a contact header parameter",
    ),
    ("3.3.13-cparam02", "valid", "REGISTER with a url parameter"),
    (
        "3.3.14-regescrt",
        "valid",
        "REGISTER with a URL escaped header",
    ),
    (
        "3.3.15-sdp01",
        "valid",
        "unacceptable Accept offering (the B2BUA relays it)",
    ),
    (
        "3.4.1-inv2543",
        "valid",
        "INVITE with RFC 2543 syntax: no Max-Forwards, no branch",
    ),
];

fn verdict(bytes: &[u8]) -> String {
    match parse_and_validate(bytes, &Limits::default()) {
        Ok(SipMessage::Request(_) | SipMessage::Response(_)) => "valid".into(),
        Err(rej) => match rej.action {
            Action::Reply(code) => format!("invalid {code}"),
            Action::Drop => "drop".into(),
        },
    }
}

#[test]
fn every_rfc_4475_message_gets_the_verdict_the_rfc_gives() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(n, _, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every file has a verdict and every verdict a file"
    );
    let mut wrong = Vec::new();
    for (name, want, why) in EXPECTED {
        let bytes = std::fs::read(dir.join(format!("{name}.sip"))).unwrap();
        let got = verdict(&bytes);
        if got != *want {
            wrong.push(format!("{name} ({why}): want {want}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// What the valid messages carry comes out as the RFC reads it, not merely "no error".
#[test]
fn valid_messages_are_read_as_the_rfc_reads_them() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475");
    let read = |name: &str| {
        let bytes = std::fs::read(dir.join(format!("{name}.sip"))).unwrap();
        parse_and_validate(&bytes, &Limits::default()).unwrap()
    };
    let SipMessage::Request(wsinv) = read("3.1.1.1-wsinv") else {
        panic!()
    };
    let h = &wsinv.headers;
    assert_eq!(h.get("Max-Forwards").map(str::trim), Some("0068"));
    let vias: Vec<_> = h.get_all("Via").collect();
    assert_eq!(vias.len(), 3, "{vias:?}");
    assert_eq!(wsinv.body.len(), 150);
    let SipMessage::Request(inv) = read("3.4.1-inv2543") else {
        panic!()
    };
    assert_eq!(inv.headers.get("Max-Forwards"), None);
    let SipMessage::Response(noreason) = read("3.1.1.13-noreason") else {
        panic!()
    };
    assert_eq!((noreason.code, noreason.reason.as_str()), (100, ""));
}
