//! The registrar against RFC 3261 §10.3, one rule a test: where the expiration comes from,
//! 423 and Min-Expires, the cap, `*` (alone, with Expires: 0), Call-ID/CSeq ordering,
//! removal with expires=0, queries, q-values, the bound on bindings, and expiry.

use drongo_core::config::RegistrarConfig;
use drongo_core::message::{parse_datagram, Limits, Request, SipMessage};
use drongo_core::registrar::{RegisterOutcome, Registrar};
use drongo_core::store::StoreWrite;
use drongo_core::transaction::{Peer, Transport};

const T0: u64 = 1_700_000_000_000;

fn source() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5062".parse().unwrap(),
    }
}

/// A REGISTER for bob with `headers` (Contact, Expires …) and Call-ID/CSeq as given.
fn register(call_id: &str, cseq: u32, headers: &str) -> Request {
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=r\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{}Content-Length: 0\r\n\r\n",
        headers
            .lines()
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
    );
    match parse_datagram(text.as_bytes(), &Limits::default()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn cfg() -> RegistrarConfig {
    RegistrarConfig::default()
}

/// Registers and expects 200; returns the listed contacts.
fn ok(r: &mut Registrar, req: &Request, now: u64) -> Vec<(String, u64)> {
    match r.register("bob", req, source(), now, &cfg()) {
        RegisterOutcome::Ok { contacts, .. } => {
            contacts.into_iter().map(|c| (c.uri, c.expires)).collect()
        }
        other => panic!("expected 200, got {other:?}"),
    }
}

fn refused(r: &mut Registrar, req: &Request, now: u64) -> (u16, Option<u32>) {
    match r.register("bob", req, source(), now, &cfg()) {
        RegisterOutcome::Refused {
            code, min_expires, ..
        } => (code, min_expires),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn bound(r: &Registrar, now: u64) -> Vec<String> {
    r.lookup("bob", now).iter().map(|b| b.uri.clone()).collect()
}

#[test]
fn expiration_comes_from_the_contact_param_then_the_header_then_the_default() {
    let mut r = Registrar::default();
    let listed = ok(
        &mut r,
        &register(
            "c",
            1,
            "Contact: <sip:bob@10.0.0.1>;expires=120\nExpires: 600",
        ),
        T0,
    );
    assert_eq!(listed, [("sip:bob@10.0.0.1".to_string(), 120)]);
    let listed = ok(
        &mut r,
        &register("c", 2, "Contact: <sip:bob@10.0.0.1>\nExpires: 600"),
        T0,
    );
    assert_eq!(listed, [("sip:bob@10.0.0.1".to_string(), 600)]);
    let listed = ok(&mut r, &register("c", 3, "Contact: <sip:bob@10.0.0.1>"), T0);
    assert_eq!(
        listed,
        [(
            "sip:bob@10.0.0.1".to_string(),
            u64::from(cfg().default_expires)
        )]
    );
}

#[test]
fn too_brief_gets_423_with_min_expires_and_too_long_is_shortened() {
    let mut r = Registrar::default();
    let (code, min) = refused(
        &mut r,
        &register("c", 1, "Contact: <sip:bob@10.0.0.1>;expires=10"),
        T0,
    );
    assert_eq!((code, min), (423, Some(cfg().min_expires)));
    assert!(
        bound(&r, T0).is_empty(),
        "nothing bound by a refused request"
    );
    let listed = ok(
        &mut r,
        &register("c", 2, "Contact: <sip:bob@10.0.0.1>;expires=999999"),
        T0,
    );
    assert_eq!(listed[0].1, u64::from(cfg().max_expires));
}

#[test]
fn a_query_without_contact_lists_the_bindings_and_writes_nothing() {
    let mut r = Registrar::default();
    ok(&mut r, &register("c", 1, "Contact: <sip:bob@10.0.0.1>"), T0);
    match r.register("bob", &register("q", 1, ""), source(), T0 + 1_000, &cfg()) {
        RegisterOutcome::Ok { contacts, write } => {
            assert_eq!(contacts.len(), 1);
            assert!(write.is_none(), "a query changes nothing");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wildcard_only_alone_and_with_expires_zero_and_it_removes_every_binding() {
    let mut r = Registrar::default();
    ok(&mut r, &register("c", 1, "Contact: <sip:bob@10.0.0.1>"), T0);
    ok(&mut r, &register("d", 1, "Contact: <sip:bob@10.0.0.2>"), T0);
    assert_eq!(refused(&mut r, &register("c", 2, "Contact: *"), T0).0, 400);
    assert_eq!(
        refused(&mut r, &register("c", 2, "Contact: *\nExpires: 60"), T0).0,
        400
    );
    assert_eq!(
        refused(
            &mut r,
            &register("c", 2, "Contact: *, <sip:bob@10.0.0.3>\nExpires: 0"),
            T0
        )
        .0,
        400
    );
    assert_eq!(bound(&r, T0).len(), 2);
    match r.register(
        "bob",
        &register("c", 2, "Contact: *\nExpires: 0"),
        source(),
        T0,
        &cfg(),
    ) {
        RegisterOutcome::Ok { contacts, write } => {
            assert!(contacts.is_empty());
            assert!(matches!(write, Some(StoreWrite::Delete { .. })));
        }
        other => panic!("{other:?}"),
    }
    assert!(bound(&r, T0).is_empty());
}

#[test]
fn wildcard_with_an_old_cseq_of_the_same_call_id_is_refused() {
    let mut r = Registrar::default();
    ok(&mut r, &register("c", 5, "Contact: <sip:bob@10.0.0.1>"), T0);
    assert_eq!(
        refused(&mut r, &register("c", 5, "Contact: *\nExpires: 0"), T0).0,
        500
    );
    assert_eq!(bound(&r, T0).len(), 1);
}

#[test]
fn same_call_id_needs_a_higher_cseq_another_call_id_replaces() {
    let mut r = Registrar::default();
    ok(&mut r, &register("c", 5, "Contact: <sip:bob@10.0.0.1>"), T0);
    assert_eq!(
        refused(&mut r, &register("c", 4, "Contact: <sip:bob@10.0.0.1>"), T0).0,
        500
    );
    // The same CSeq again is a retransmission of the request already applied (its
    // transaction was lost with a restarted node): 200, the binding as it was written.
    let again = ok(
        &mut r,
        &register("c", 5, "Contact: <sip:bob@10.0.0.1>;expires=500"),
        T0 + 10_000,
    );
    assert_eq!(
        again,
        [("sip:bob@10.0.0.1".to_string(), 3590)],
        "not refreshed"
    );
    ok(
        &mut r,
        &register("c", 6, "Contact: <sip:bob@10.0.0.1>;expires=100"),
        T0,
    );
    // Another Call-ID (a rebooted phone) may update with any CSeq.
    ok(
        &mut r,
        &register("other", 1, "Contact: <sip:bob@10.0.0.1>;expires=200"),
        T0,
    );
    let b = r.lookup("bob", T0);
    assert_eq!(b.len(), 1, "one binding per contact URI");
    assert_eq!((b[0].call_id.as_str(), b[0].cseq), ("other", 1));
    assert_eq!(b[0].expires_at, T0 + 200_000);
}

#[test]
fn expires_zero_removes_one_binding_and_the_last_removal_deletes_the_record() {
    let mut r = Registrar::default();
    ok(
        &mut r,
        &register("c", 1, "Contact: <sip:bob@10.0.0.1>, <sip:bob@10.0.0.2>"),
        T0,
    );
    let listed = ok(
        &mut r,
        &register("c", 2, "Contact: <sip:bob@10.0.0.1>;expires=0"),
        T0,
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(bound(&r, T0), ["sip:bob@10.0.0.2"]);
    match r.register(
        "bob",
        &register("c", 3, "Contact: <sip:bob@10.0.0.2>\nExpires: 0"),
        source(),
        T0,
        &cfg(),
    ) {
        RegisterOutcome::Ok { write, .. } => {
            assert!(matches!(write, Some(StoreWrite::Delete { key, .. }) if key == "reg/bob"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn q_values_order_the_lookup_and_a_bad_q_is_refused() {
    let mut r = Registrar::default();
    ok(
        &mut r,
        &register(
            "c",
            1,
            "Contact: <sip:bob@10.0.0.1>;q=0.2, <sip:bob@10.0.0.2>;q=0.9, <sip:bob@10.0.0.3>",
        ),
        T0,
    );
    assert_eq!(
        bound(&r, T0),
        ["sip:bob@10.0.0.3", "sip:bob@10.0.0.2", "sip:bob@10.0.0.1"]
    );
    assert_eq!(
        refused(
            &mut r,
            &register("c", 2, "Contact: <sip:bob@10.0.0.4>;q=1.5"),
            T0
        )
        .0,
        400
    );
}

#[test]
fn more_bindings_than_allowed_get_503() {
    let mut r = Registrar::default();
    let max = cfg().max_bindings;
    for i in 0..max {
        ok(
            &mut r,
            &register(
                &format!("c{i}"),
                1,
                &format!("Contact: <sip:bob@10.0.0.{i}>"),
            ),
            T0,
        );
    }
    assert_eq!(
        refused(&mut r, &register("x", 1, "Contact: <sip:bob@10.0.1.1>"), T0).0,
        503
    );
    assert_eq!(bound(&r, T0).len(), max);
}

#[test]
fn a_binding_expires_at_its_deadline_and_its_removal_is_written() {
    let mut r = Registrar::default();
    ok(
        &mut r,
        &register("c", 1, "Contact: <sip:bob@10.0.0.1>;expires=60"),
        T0,
    );
    assert_eq!(r.poll_timeout(), Some(T0 + 60_000));
    assert_eq!(bound(&r, T0 + 59_999).len(), 1);
    assert!(
        bound(&r, T0 + 60_000).is_empty(),
        "never served past expiry"
    );
    assert!(r.handle_timeout(T0 + 59_999, true).is_empty());
    let writes = r.handle_timeout(T0 + 60_000, true);
    assert!(matches!(&writes[..], [StoreWrite::Delete { key, .. }] if key == "reg/bob"));
    assert_eq!(r.binding_count(), 0);
    assert_eq!(r.poll_timeout(), None);
}

/// The write a REGISTER made.
fn write_of(r: &mut Registrar, req: &Request, now: u64) -> StoreWrite {
    match r.register("bob", req, source(), now, &cfg()) {
        RegisterOutcome::Ok { write: Some(w), .. } => w,
        other => panic!("expected 200 with a write, got {other:?}"),
    }
}

/// An AOR record made again after its delete never reuses a version: a stale copy's
/// compare-and-swap (another node's expiry, say) must fail on it. (Found by the simulation:
/// clock-skew seed 3, where the other node's stale delete of v1 removed a new v1.)
#[test]
fn a_record_made_again_after_its_delete_has_a_version_never_used_before() {
    let mut r = Registrar::default();
    let first = write_of(&mut r, &register("c", 1, "Contact: <sip:bob@10.0.0.1>"), T0);
    let StoreWrite::Put { version: v1, .. } = first else {
        panic!("{first:?}")
    };
    let gone = write_of(&mut r, &register("c", 2, "Contact: *\nExpires: 0"), T0 + 10);
    assert!(matches!(gone, StoreWrite::Delete { expect, .. } if expect == v1));
    let again = write_of(
        &mut r,
        &register("c", 3, "Contact: <sip:bob@10.0.0.1>"),
        T0 + 20,
    );
    let StoreWrite::Put {
        version: v2,
        expect: None,
        ..
    } = again
    else {
        panic!("{again:?}")
    };
    assert_ne!(
        v1, v2,
        "a stale delete expecting {v1} would remove the new record"
    );
    assert!(v2 > v1);
}

/// Two writes of one AOR failed (a store outage); a REGISTER then wrote the AOR again.
/// Both read-backs may have been taken before that write landed: neither is the truth
/// (simulation: store-outage seed 472, where the second wiped the new binding).
#[test]
fn every_read_back_of_a_failed_write_yields_to_a_later_write() {
    let mut r = Registrar::default();
    ok(&mut r, &register("c", 1, "Contact: <sip:bob@10.0.0.1>"), T0);
    r.expect_read_back("bob");
    r.expect_read_back("bob");
    ok(
        &mut r,
        &register("c", 2, "Contact: <sip:bob@10.0.0.1>"),
        T0 + 10,
    );
    assert!(!r.take_read_back("bob"));
    assert!(!r.take_read_back("bob"));
    // A read-back of a failure after the last write is the truth again.
    r.expect_read_back("bob");
    assert!(r.take_read_back("bob"));
}

const PHONE_1: &str = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
const PHONE_2: &str = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E129>\"";

/// A phone that registers again after a reboot, from a new port and with a new Call-ID,
/// replaces its own binding (named by its `+sip.instance` and `reg-id`, RFC 5626): it is
/// not left beside a stale one that calls would fork to. Another phone of the user, or a
/// second flow of the same one (another reg-id), is a binding of its own; the 200 lists
/// each with the instance and reg-id it was registered with.
#[test]
fn a_phones_instance_names_its_binding() {
    let mut r = Registrar::default();
    let c = |port: u16, inst: &str, reg_id: u32| {
        format!("Contact: <sip:bob@10.0.0.1:{port}>;{inst};reg-id={reg_id}\nExpires: 600")
    };
    ok(&mut r, &register("boot1", 1, &c(5060, PHONE_1, 1)), T0);
    ok(
        &mut r,
        &register("boot2", 1, &c(6000, PHONE_1, 1)),
        T0 + 1_000,
    );
    assert_eq!(bound(&r, T0 + 1_000), ["sip:bob@10.0.0.1:6000"]);
    ok(
        &mut r,
        &register("other", 1, &c(7000, PHONE_2, 1)),
        T0 + 2_000,
    );
    ok(
        &mut r,
        &register("flow2", 1, &c(6001, PHONE_1, 2)),
        T0 + 3_000,
    );
    let mut all = bound(&r, T0 + 3_000);
    all.sort();
    assert_eq!(
        all,
        [
            "sip:bob@10.0.0.1:6000",
            "sip:bob@10.0.0.1:6001",
            "sip:bob@10.0.0.1:7000"
        ]
    );
    // Call-ID/CSeq ordering holds within one registration's Call-ID (§10.3 step 7).
    let (code, _) = refused(
        &mut r,
        &register("boot2", 0, &c(6002, PHONE_1, 1)),
        T0 + 4_000,
    );
    assert_eq!(code, 500);
    // The 200 says which instance and flow each binding is.
    match r.register(
        "bob",
        &register("boot2", 2, &c(6000, PHONE_1, 1)),
        source(),
        T0 + 5_000,
        &cfg(),
    ) {
        RegisterOutcome::Ok { contacts, .. } => {
            let mine = contacts
                .iter()
                .find(|l| l.uri == "sip:bob@10.0.0.1:6000")
                .expect("listed");
            assert_eq!(
                mine.contact(),
                "<sip:bob@10.0.0.1:6000>;expires=600;\
                 +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1"
            );
        }
        other => panic!("{other:?}"),
    }
    // Removing it by its instance (expires=0, whatever its Contact URI now) removes it.
    ok(
        &mut r,
        &register(
            "boot2",
            3,
            &format!("Contact: <sip:bob@10.0.0.1:9>;{PHONE_1};reg-id=1;expires=0"),
        ),
        T0 + 6_000,
    );
    let mut left = bound(&r, T0 + 6_000);
    left.sort();
    assert_eq!(left, ["sip:bob@10.0.0.1:6001", "sip:bob@10.0.0.1:7000"]);
}
