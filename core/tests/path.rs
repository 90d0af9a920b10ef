//! Proxies on the path. A phone registered through an edge proxy (Path, RFC 3327) is
//! called through it: the 200 to its REGISTER echoes the Path when the phone supports it,
//! and the INVITE to it carries the Path as preloaded Routes and goes to the first of them,
//! as its CANCEL does. A caller behind a record-routing proxy gets its Record-Route back
//! and is reached through it.

mod common;
use common::*;

const REGISTER_VIA_EDGE: &str = "REGISTER sip:127.0.0.1 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKe1\n\
Via: SIP/2.0/UDP 10.9.9.9:5062;branch=z9hG4bKr1\nMax-Forwards: 69\n\
From: <sip:bob@127.0.0.1>;tag=r\nTo: <sip:bob@127.0.0.1>\nCall-ID: reg1\nCSeq: 1 REGISTER\n\
Path: <sip:edge@127.0.0.1:5090;lr>\nSupported: path\n\
Contact: <sip:bob@10.9.9.9:5062>\nExpires: 600\nContent-Length: 0\n\n";

#[test]
fn a_callee_registered_through_an_edge_proxy_is_called_through_it() {
    let mut n = node(Config::default());
    let mut store = Store::new();
    send(&mut n, T0, "127.0.0.1:5090", REGISTER_VIA_EDGE);
    let out = run(&mut n, &mut store);
    assert_eq!(lines(&out), ["127.0.0.1:5090 200 OK"]);
    let SipMessage::Response(ok) = &out[0].1 else {
        panic!()
    };
    assert_eq!(ok.headers.get("Path"), Some("<sip:edge@127.0.0.1:5090;lr>"));

    send(&mut n, T0 + 10, A, INVITE);
    let out = run(&mut n, &mut store);
    assert_eq!(
        lines(&out),
        [
            "127.0.0.1:5090 INVITE sip:bob@10.9.9.9:5062",
            "127.0.0.1:5061 100 Trying"
        ]
    );
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!()
    };
    assert_eq!(
        b_inv.headers.get("Route"),
        Some("<sip:edge@127.0.0.1:5090;lr>")
    );

    // The callee rings; the caller gives up: the CANCEL goes the INVITE's way.
    send(
        &mut n,
        T0 + 20,
        "127.0.0.1:5090",
        &reply(&b_inv, "180 Ringing"),
    );
    run(&mut n, &mut store);
    let cancel = of_invite("CANCEL");
    send(&mut n, T0 + 30, A, &cancel);
    let out = run(&mut n, &mut store);
    let l = lines(&out);
    assert!(
        l.contains(&"127.0.0.1:5090 CANCEL sip:bob@10.9.9.9:5062".to_string()),
        "{l:?}"
    );
}

#[test]
fn a_phone_that_does_not_support_path_gets_no_path_back() {
    let mut n = node(Config::default());
    let mut store = Store::new();
    send(
        &mut n,
        T0,
        "127.0.0.1:5090",
        &REGISTER_VIA_EDGE.replace("Supported: path\n", ""),
    );
    let out = run(&mut n, &mut store);
    let SipMessage::Response(ok) = &out[0].1 else {
        panic!()
    };
    assert_eq!(ok.code, 200);
    assert_eq!(ok.headers.get("Path"), None);
}

/// A caller behind a proxy that record-routes (a balancer holding the caller's connection):
/// the 180 and 200 to it echo the INVITE's Record-Route (RFC 3261 §12.1.1), and Drongo's
/// BYE to it goes through that proxy with the route.
#[test]
fn a_caller_behind_a_record_routing_proxy_is_answered_and_reached_through_it() {
    let mut n = node(Config::default());
    let mut store = Store::new();
    register_bob(&mut n, &mut store);
    let rr = "<sip:flow-1@127.0.0.1:5090;lr>";
    let invite = INVITE.replace("Max-Forwards", &format!("Record-Route: {rr}\nMax-Forwards"));
    send(&mut n, T0 + 10, A, &invite);
    let out = run(&mut n, &mut store);
    let SipMessage::Request(b_inv) = out[0].1.clone() else {
        panic!("{:?}", lines(&out))
    };
    assert_eq!(b_inv.headers.get("Record-Route"), None, "the B-leg is ours");
    for status in ["180 Ringing", "200 OK"] {
        send(&mut n, T0 + 20, B, &reply(&b_inv, status));
        let out = run(&mut n, &mut store);
        let to_caller: Vec<_> = out.iter().filter(|(to, _)| to == A).collect();
        let SipMessage::Response(r) = &to_caller[0].1 else {
            panic!("{:?}", lines(&out))
        };
        assert_eq!(r.headers.get("Record-Route"), Some(rr), "{status}");
    }
    // The callee hangs up: the BYE to the caller goes to the proxy, routed.
    let bye = format!(
        "BYE sip:drongo@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKbye\n\
         Max-Forwards: 70\n{}\n{}\nCall-ID: {}\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        format_args!("From: {};tag=bt", b_inv.headers.get("To").unwrap_or_default()),
        format_args!("To: {}", b_inv.headers.get("From").unwrap_or_default()),
        b_inv.headers.get("Call-ID").unwrap_or_default()
    );
    send(&mut n, T0 + 30, B, &bye);
    let out = run(&mut n, &mut store);
    let l = lines(&out);
    let to_caller = out
        .iter()
        .find(|(_, m)| matches!(m, SipMessage::Request(r) if r.method.as_str() == "BYE"))
        .unwrap_or_else(|| panic!("{l:?}"));
    assert_eq!(to_caller.0, "127.0.0.1:5090", "{l:?}");
    let SipMessage::Request(r) = &to_caller.1 else {
        panic!()
    };
    assert_eq!(r.headers.get("Route"), Some(rr));
}
