//! Reconstruction: a layer restored from snapshots carries on with the schedules the
//! snapshots imply.

use super::*;

#[test]
fn restore_fires_overdue_deadlines_in_order() {
    let mut a = layer();
    let inv = request("INVITE", "z9hG4bKa");
    a.send_request(inv, peer(Transport::Udp), T0).unwrap();
    a.send_request(
        request("OPTIONS", "z9hG4bKb"),
        peer(Transport::Udp),
        T0 + 100,
    )
    .unwrap();
    lines(&mut a);
    let json = serde_json::to_string(&a.snapshots()).unwrap();
    let snaps: Vec<Snapshot> = serde_json::from_str(&json).unwrap();
    let mut b = layer();
    // Restored 40 s later: both timeouts are overdue and fire at once, by deadline.
    b.restore(snaps, T0 + 40_000);
    let evs = kinds(&events(&mut b));
    assert_eq!(evs, ["Timeout B", "Terminated", "Timeout F", "Terminated"]);
    assert!(b.is_empty());
}

/// A snapshot taken when the INVITE first left, restored by another node 1442 ms later:
/// the first retransmission (500 ms) is past, and the second comes on its schedule (at
/// 1500 ms), not at once, which would be 942 ms after the first.
#[test]
fn restore_keeps_the_retransmission_schedule_of_a_stale_snapshot() {
    let mut a = layer();
    a.send_request(request("INVITE", "z9hG4bKa"), peer(Transport::Udp), T0)
        .unwrap();
    lines(&mut a);
    let snaps = a.snapshots();
    let mut one = layer();
    one.restore(snaps.clone(), T0);
    let whole: Vec<(u64, String)> = drive(&mut one, T0 + 10_000);
    let mut b = layer();
    b.restore(snaps, T0 + 1_442);
    assert!(lines(&mut b).is_empty(), "nothing at the restore itself");
    let after: Vec<(u64, String)> = drive(&mut b, T0 + 10_000);
    let expected: Vec<(u64, String)> = whole.into_iter().filter(|(t, _)| *t > 1_442).collect();
    assert_eq!(after, expected);
    assert_eq!(after.first().map(|(t, _)| *t), Some(1_500));
}

/// A transaction given up and restored under the same key before its end was reported:
/// the restored one is not reported ended (store-leader-change-during-takeover seed 76).
#[test]
fn a_restored_transaction_is_not_reported_ended_for_its_predecessor() {
    let mut a = layer();
    let key = a
        .send_request(request("INVITE", "z9hG4bKa"), peer(Transport::Udp), T0)
        .unwrap();
    lines(&mut a);
    let snaps = a.snapshots();
    a.abandon(&key);
    a.restore(snaps, T0 + 100);
    assert!(kinds(&events(&mut a)).is_empty());
    assert!(a.get(&key).is_some());
}
