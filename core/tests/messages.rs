//! The message corpus in `tests/messages/`: each file's outcome is named by its prefix
//! (`valid-`, `invalid-` answered with a status, `drop-`), and the whole listing, in the
//! `sipcheck` line format, is pinned by a snapshot.

use drongo_core::message::{
    error_response_from_raw, parse_and_validate, parse_datagram, Action, Limits, SipMessage,
};
use std::path::PathBuf;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/messages");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn line(name: &str, bytes: &[u8]) -> String {
    match parse_and_validate(bytes, &Limits::default()) {
        Ok(SipMessage::Request(r)) => format!("{name}: valid request {}", r.method),
        Ok(SipMessage::Response(r)) => format!("{name}: valid response {}", r.code),
        Err(rej) => match rej.action {
            Action::Reply(code) => format!("{name}: invalid {code} {}", rej.rule),
            Action::Drop => format!("{name}: invalid drop {}", rej.rule),
        },
    }
}

#[test]
fn every_file_has_the_outcome_its_name_says() {
    let corpus = corpus();
    assert!(corpus.len() > 40);
    for (name, bytes) in &corpus {
        let got = parse_and_validate(bytes, &Limits::default());
        match name.split('-').next().unwrap() {
            "valid" => assert!(got.is_ok(), "{name}: {got:?}"),
            "invalid" => assert!(
                matches!(got, Err(ref r) if matches!(r.action, Action::Reply(_))),
                "{name}: {got:?}"
            ),
            "drop" => assert!(
                matches!(got, Err(ref r) if r.action == Action::Drop),
                "{name}: {got:?}"
            ),
            other => panic!("unknown prefix {other}"),
        }
    }
}

#[test]
fn sipcheck_listing() {
    let listing: Vec<String> = corpus().iter().map(|(n, b)| line(n, b)).collect();
    insta::assert_snapshot!(listing.join("\n"));
}

#[test]
fn valid_messages_serialize_and_reparse_to_the_same_message() {
    for (name, bytes) in corpus() {
        let Ok(msg) = parse_and_validate(&bytes, &Limits::default()) else {
            continue;
        };
        let wire = msg.to_bytes();
        let again = parse_datagram(&wire, &Limits::default()).unwrap();
        assert_eq!(msg, again, "{name}");
        assert_eq!(again.to_bytes(), wire, "{name}: serialization is stable");
    }
}

#[test]
fn answered_rejections_produce_a_parseable_response_with_that_code() {
    for (name, bytes) in corpus() {
        let Err(rej) = parse_and_validate(&bytes, &Limits::default()) else {
            continue;
        };
        let Action::Reply(code) = rej.action else {
            assert!(error_response_from_raw(&bytes, &rej, "t1").is_none());
            continue;
        };
        let Some(resp) = error_response_from_raw(&bytes, &rej, "t1") else {
            // Only a message with no recognisable Via cannot be answered.
            assert!(name.contains("garbage"), "{name}");
            continue;
        };
        match parse_datagram(&resp, &Limits::default()) {
            Ok(SipMessage::Response(r)) => {
                assert_eq!(r.code, code, "{name}");
                assert!(r.headers.get("Via").is_some(), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
