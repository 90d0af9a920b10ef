//! Snapshots of generated wire messages: responses (§8.2.6), ACK for non-2xx (§17.1.1.3),
//! CANCEL (§9.1), and the error response to a rejected request. Any change to what Drongo
//! puts on the wire shows up here for review.

use drongo_core::ids::IdGen;
use drongo_core::message::{
    ack_for_non2xx, cancel_for, error_response_from_raw, parse_and_validate, response_to, Limits,
    Request, SipMessage,
};

fn file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/messages/{name}.sip",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn invite() -> Request {
    match parse_and_validate(&file("valid-invite"), &Limits::default()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn responses() {
    let inv = invite();
    let mut ids = IdGen::new(1, 42);
    let tag = ids.tag();
    let mut with_ts = inv.clone();
    with_ts.headers.push("Timestamp", "54.21");
    insta::assert_snapshot!(
        "trying",
        text(response_to(&with_ts, 100, None, &tag).to_bytes())
    );
    insta::assert_snapshot!(
        "ringing",
        text(response_to(&inv, 180, None, &tag).to_bytes())
    );
    insta::assert_snapshot!(
        "busy_custom_reason",
        text(response_to(&inv, 486, Some("Busy Right Now"), &tag).to_bytes())
    );
}

#[test]
fn ack_and_cancel() {
    let mut inv = invite();
    inv.headers.push("Route", "<sip:proxy1.example.com;lr>");
    inv.headers.push("Route", "<sip:proxy2.example.com;lr>");
    let busy = response_to(&inv, 486, None, "callee-tag");
    insta::assert_snapshot!("ack_for_486", text(ack_for_non2xx(&inv, &busy).to_bytes()));
    insta::assert_snapshot!("cancel", text(cancel_for(&inv).to_bytes()));
}

#[test]
fn error_responses() {
    for name in ["invalid-require-unknown", "invalid-cseq-method-mismatch"] {
        let raw = file(name);
        let rej = parse_and_validate(&raw, &Limits::default()).unwrap_err();
        let resp = error_response_from_raw(&raw, &rej, "err-tag").unwrap();
        insta::assert_snapshot!(name, text(resp));
    }
}

#[test]
fn generated_ids_are_stable_for_a_seed() {
    let mut ids = IdGen::new(3, 7);
    let sample = format!("{}\n{}\n{}", ids.tag(), ids.branch(), ids.call_id());
    insta::assert_snapshot!("ids_node3_seed7", sample);
}
