//! Other regions' bindings (read-only copies their replicators keep in this region's store,
//! `rreg/{region}/{aor}`): found by lookups and listed by queries beside this region's,
//! never past their expiry, gone when their copy goes, and never touched by a REGISTER here.

use drongo_core::config::RegistrarConfig;
use drongo_core::message::{parse_datagram, Limits, Request, SipMessage};
use drongo_core::registrar::{AddressOfRecord, Binding, RegisterOutcome, Registrar};
use drongo_core::store::{copy_key, Key, StoreWrite, StoredRecord};
use drongo_core::transaction::{Peer, Transport};

const T0: u64 = 1_700_000_000_000;

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5062".parse().unwrap(),
    }
}

fn register(contact: Option<&str>) -> Request {
    let contact = contact.map_or(String::new(), |c| format!("Contact: <{c}>;expires=60\r\n"));
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=r\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: c1\r\nCSeq: 1 REGISTER\r\n{contact}Content-Length: 0\r\n\r\n"
    );
    match parse_datagram(text.as_bytes(), &Limits::default()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// Region `region`'s copy of bob's record, with one binding to `uri` until `until`.
fn copy(region: &str, uri: &str, until: u64) -> StoredRecord {
    let rec = AddressOfRecord {
        version: 7,
        bindings: vec![Binding {
            uri: uri.into(),
            q: 1000,
            expires_at: until,
            call_id: "far".into(),
            cseq: 3,
            source: peer(),
            instance: None,
            reg_id: None,
            path: Vec::new(),
            flow: None,
        }],
    };
    StoredRecord {
        key: copy_key(region, "bob"),
        value: serde_json::to_vec(&rec).unwrap(),
        version: 7,
        expires_at: Some(until),
    }
}

fn listed(out: RegisterOutcome) -> Vec<String> {
    match out {
        RegisterOutcome::Ok { contacts, .. } => contacts.into_iter().map(|c| c.uri).collect(),
        other => panic!("expected 200, got {other:?}"),
    }
}

#[test]
fn copy_keys_name_their_region_and_aor() {
    assert_eq!(Key::parse("rreg/eu/bob"), Some(Key::Copy("eu", "bob")));
    assert_eq!(Key::parse("rreg/eu"), None);
}

#[test]
fn lookups_and_queries_find_other_regions_bindings_until_they_expire() {
    let mut r = Registrar::default();
    let cfg = RegistrarConfig::default();
    r.observe_copy(
        "eu",
        "bob",
        Some(&copy("eu", "sip:bob@10.0.0.9", T0 + 30_000)),
    );
    let found: Vec<&str> = r.lookup("bob", T0).iter().map(|b| b.uri.as_str()).collect();
    assert_eq!(found, ["sip:bob@10.0.0.9"]);
    // A REGISTER here adds this region's binding and writes this region's record only.
    let out = r.register("bob", &register(Some("sip:bob@10.0.0.1")), peer(), T0, &cfg);
    match &out {
        RegisterOutcome::Ok {
            contacts,
            write: Some(StoreWrite::Put { key, value, .. }),
        } => {
            assert_eq!(key, "reg/bob");
            let rec = AddressOfRecord::decode(value).unwrap();
            assert_eq!(rec.bindings.len(), 1, "the copy is not written here");
            assert_eq!(contacts.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    // A query lists both; a lookup finds both.
    let q = listed(r.register("bob", &register(None), peer(), T0 + 1, &cfg));
    assert_eq!(q.len(), 2, "{q:?}");
    assert_eq!(r.lookup("bob", T0 + 1).len(), 2);
    // Never past its expiry.
    assert_eq!(r.lookup("bob", T0 + 30_000).len(), 1);
    let q = listed(r.register("bob", &register(None), peer(), T0 + 30_000, &cfg));
    assert_eq!(q, ["sip:bob@10.0.0.1"]);
}

#[test]
fn a_removed_copy_is_forgotten() {
    let mut r = Registrar::default();
    r.observe_copy(
        "eu",
        "bob",
        Some(&copy("eu", "sip:bob@10.0.0.9", T0 + 30_000)),
    );
    r.observe_copy(
        "us",
        "bob",
        Some(&copy("us", "sip:bob@10.0.0.8", T0 + 30_000)),
    );
    assert_eq!(r.lookup("bob", T0).len(), 2);
    r.observe_copy("eu", "bob", None);
    let found: Vec<&str> = r.lookup("bob", T0).iter().map(|b| b.uri.as_str()).collect();
    assert_eq!(found, ["sip:bob@10.0.0.8"]);
    r.observe_copy("us", "bob", None);
    assert!(r.lookup("bob", T0).is_empty());
}
