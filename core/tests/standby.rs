//! A hot standby takes its call over from the copy it follows, reading nothing, also when
//! a request for the call came while the dead owner was still listed and was held.

mod common;
use common::*;
use drongo_core::config::{ClusterConfig, Strategy};

fn hot_standby(id: u16, port: u16) -> Node {
    let cfg = Config {
        cluster: ClusterConfig {
            strategy: Strategy::HotStandby,
            ..Default::default()
        },
        ..Config::default()
    };
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut n = Node::new(cfg, addr, id, 100 + u64::from(id));
    n.handle_members(T0, 1, &[(1, 1), (2, 1)], &[]);
    n
}

/// io-real/tests/failover.rs the_hot_standby_takes_over_without_a_store_read failed one
/// run in three: the caller's INFO reached the standby before the owner left its list,
/// was held, and the owner's leaving made the standby read the call from the store.
#[test]
fn a_request_held_for_the_owner_is_served_from_the_standbys_copy() {
    let mut n1 = hot_standby(1, 5060);
    let mut store = Store::new();
    let (_b_inv, ok) = confirmed_call(&mut n1, &mut store);
    send(&mut n1, T0 + 40, A, &ack_from_a(&ok));
    run(&mut n1, &mut store);

    let mut n2 = hot_standby(2, 5070);
    watch_calls(&mut n2, &store, T0 + 100);
    assert_eq!(n2.standby_calls(), 1);
    // Node 1 dies; its member record has not run out yet: the INFO is held.
    send(&mut n2, T0 + 1_000, A, &from_a(&ok, "INFO", 2, "z9hG4bKi9"));
    assert!(load_all(&mut n2, &store, T0 + 1_000).is_empty());
    assert!(run(&mut n2, &mut store).is_empty(), "held, not answered");
    // Node 1 leaves the list: the call is taken over from the copy and the INFO served.
    n2.handle_members(T0 + 3_000, 1, &[(2, 1)], &[]);
    scan_all(&mut n2, &store, T0 + 3_000);
    assert_eq!(load_all(&mut n2, &store, T0 + 3_000), Vec::<String>::new());
    let l = lines(&run(&mut n2, &mut store));
    assert!(
        l.contains(&"127.0.0.1:5062 INFO sip:bob@127.0.0.1:5062".to_string()),
        "{l:?}"
    );
    assert_eq!(n2.metrics().standby_takeovers, 1);
}
