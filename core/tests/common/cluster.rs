//! Helpers of the cluster's end-to-end tests (`takeover`, `forwarding`): members of a
//! cluster of two, and a call run by member 1.

use super::*;

/// Node `id` at its own address, a member of a cluster of `members` (id, incarnation).
pub fn member(id: u16, port: u16, members: &[(u16, u64)]) -> Node {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut n = Node::new(Config::default(), addr, id, 100 + u64::from(id));
    n.handle_members(T0, 1, members, &[]);
    n
}

/// A request held for a live owner (loaded at `loaded`) is let go one lease TTL later:
/// what the node sends then (nothing: the owner answers it through the balancer).
pub fn held_until_ttl(n: &mut Node, store: &mut Store, loaded: u64) -> Vec<(String, SipMessage)> {
    let ttl = Config::default().cluster.lease_ttl_ms;
    assert_eq!(n.poll_timeout(), Some(loaded + ttl), "held for one TTL");
    n.handle_input(loaded + ttl, Input::Timeout);
    run(n, store)
}

pub fn owner(store: &Store, key: &str) -> serde_json::Value {
    let r = store.get(key).expect("call record");
    let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    serde_json::json!([v["owner"], v["owner_incarnation"]])
}

/// A confirmed, ACKed call run by node 1 of a cluster of two: the store, the call's key,
/// the B-leg INVITE and the caller's 200, and node 1.
pub fn call_and_node_1() -> (
    Store,
    String,
    drongo_core::message::Request,
    drongo_core::message::Response,
    Node,
) {
    let mut n1 = member(1, 5060, &[(1, 1), (2, 1)]);
    let mut store = Store::new();
    let (b_inv, ok) = confirmed_call(&mut n1, &mut store);
    send(&mut n1, T0 + 40, A, &ack_from_a(&ok));
    run(&mut n1, &mut store);
    let call_key = store
        .keys()
        .find(|k| k.starts_with("call/"))
        .cloned()
        .unwrap();
    let id = call_key.trim_start_matches("call/").to_string();
    assert_eq!(
        store.get("leg/callA").map(|r| r.value.clone()),
        Some(id.as_bytes().to_vec()),
        "the A-leg index names the call"
    );
    assert_eq!(owner(&store, &call_key), serde_json::json!([1, 1]));
    (store, call_key, b_inv, ok, n1)
}

/// As [`call_and_node_1`], node 1 being dead.
pub fn call_on_node_1() -> (
    Store,
    String,
    drongo_core::message::Request,
    drongo_core::message::Response,
) {
    let (store, key, b_inv, ok, _) = call_and_node_1();
    (store, key, b_inv, ok)
}
