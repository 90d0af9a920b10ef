//! The committer against an in-memory store.

use super::committer;
use super::transport::Sender;
use super::Clock;
use crate::store::MemStore;
use crate::store::Store;
use drongo_core::node::{Batch, BatchId, Input, WriteError};
use drongo_core::store::StoreWrite;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

fn put(version: u64, expect: u64, value: &str) -> StoreWrite {
    StoreWrite::Put {
        key: "call/x".into(),
        value: value.as_bytes().to_vec(),
        version,
        expect: Some(expect),
        expires_at: None,
    }
}

fn batch(id: u64, w: StoreWrite) -> Batch {
    Batch {
        id: BatchId(id),
        writes: vec![w],
        report: true,
        ..Batch::default()
    }
}

/// The store with another member's record of the call at version 3, and a committer on
/// it; the committer's inputs, its results and its task.
async fn rig() -> (
    MemStore,
    mpsc::Sender<Batch>,
    mpsc::UnboundedReceiver<Input>,
    tokio::task::JoinHandle<()>,
) {
    let store = MemStore::default();
    let clock = Clock { offset_ms: 0 };
    let theirs = [
        StoreWrite::Put {
            key: "call/x".into(),
            value: b"theirs".to_vec(),
            version: 1,
            expect: None,
            expires_at: None,
        },
        put(2, 1, "theirs"),
        put(3, 2, "theirs"),
    ];
    for w in theirs {
        store.apply(vec![w], clock.now()).await.unwrap();
    }
    let (batch_tx, batch_rx) = mpsc::channel(16);
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let (input, _input_rx) = mpsc::channel(16);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sender = Sender {
        udp: Arc::new(udp),
        tcp: Arc::new(Mutex::new(HashMap::new())),
        input,
        max_message: 65_535,
        fence: None,
    };
    let task = tokio::spawn(committer::run(
        store.clone(),
        batch_rx,
        sender,
        results_tx,
        clock,
        None,
    ));
    (store, batch_tx, results_rx, task)
}

/// Ours: on version 1 (as it was when we read it) to 2, then 3, then 4.
fn ours() -> [Batch; 3] {
    [
        batch(1, put(2, 1, "ours")),
        batch(2, put(3, 2, "ours")),
        batch(3, put(4, 3, "ours")),
    ]
}

/// Runs the committer to its end; the ids of the batches that failed, and what the store
/// holds. Every failure is a lost compare-and-swap.
async fn outcome(
    store: MemStore,
    batch_tx: mpsc::Sender<Batch>,
    mut results_rx: mpsc::UnboundedReceiver<Input>,
    task: tokio::task::JoinHandle<()>,
) -> (Vec<u64>, (u64, Vec<u8>)) {
    drop(batch_tx);
    task.await.unwrap();
    let mut failed = Vec::new();
    while let Ok(input) = results_rx.try_recv() {
        if let Input::CommitFailed { id, errors } = input {
            assert_eq!(errors, [(0, WriteError::Conflict)]);
            failed.push(id.0);
        }
    }
    failed.sort_unstable();
    let r = store.get("call/x", 0).await.unwrap().unwrap();
    (failed, (r.version, r.value))
}

/// Three writes of one call, made one after the other (each on the version the one before
/// would make), reach the committer together and go in one group commit. The first loses
/// its compare-and-swap: another member adopted the call and wrote it up to version 3
/// meanwhile. The third write expects version 3 too, but the version it means never came
/// to be: it must fail unwritten, not overwrite the other member's record (simulation:
/// store-leader-change-during-takeover seed 275).
#[tokio::test]
async fn writes_in_one_group_built_on_a_failed_write_fail_unwritten() {
    let (store, batch_tx, results_rx, task) = rig().await;
    for b in ours() {
        batch_tx.send(b).await.unwrap();
    }
    let (failed, held) = outcome(store, batch_tx, results_rx, task).await;
    assert_eq!(failed, [1, 2, 3], "every write of ours failed");
    assert_eq!(held, (3, b"theirs".to_vec()));
}

/// As above, each write committed (and failed) in a group of its own before the next
/// arrives.
#[tokio::test]
async fn later_writes_built_on_a_failed_write_fail_unwritten() {
    let (store, batch_tx, results_rx, task) = rig().await;
    for b in ours() {
        batch_tx.send(b).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (failed, held) = outcome(store, batch_tx, results_rx, task).await;
    assert_eq!(failed, [1, 2, 3], "every write of ours failed");
    assert_eq!(held, (3, b"theirs".to_vec()));
}

/// A write the node made after it heard of the failure (and read the record back) is
/// written as usual, even on the version the failed write was to make: that write may
/// have landed after all (its answer was lost), and the node saw so.
#[tokio::test]
async fn a_write_made_after_the_failure_was_heard_is_tried() {
    let (store, batch_tx, results_rx, task) = rig().await;
    // On version 2, to 3: lost (the record is at 3 already).
    batch_tx.send(batch(1, put(3, 2, "ours"))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Made on the record read back (version 3), after the failure report: it expects the
    // very version the failed write was to make.
    let mut after = batch(2, put(4, 3, "ours, on theirs"));
    after.heard = 1;
    batch_tx.send(after).await.unwrap();
    let (failed, held) = outcome(store, batch_tx, results_rx, task).await;
    assert_eq!(failed, [1]);
    assert_eq!(held, (4, b"ours, on theirs".to_vec()));
}
