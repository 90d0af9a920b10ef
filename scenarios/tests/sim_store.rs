//! The simulated store keeps the store contract (the same conformance suite as the real
//! backends), and its faults look to a client as the contract says they may.
#![cfg(madsim)]

use drongo::store::{apply_resolved, conformance, Store, StoreError};
use drongo_core::store::StoreWrite;
use drongo_io_sim::store::{SimStore, StoreServer, STORE_PORT};
use drongo_io_sim::trace::Trace;
use madsim::runtime::{Handle, Runtime};
use std::net::SocketAddr;

fn server_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], STORE_PORT))
}

/// Runs `client` on its own simulated node next to a store server.
fn with_store<F, Fut>(seed: u64, client: F) -> StoreServer
where
    F: FnOnce(SimStore, StoreServer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(async move {
        let server = StoreServer::new(seed, Trace::default());
        let s = server.clone();
        Handle::current()
            .create_node()
            .name("store")
            .ip(server_addr().ip())
            .init(move || s.clone().serve(server_addr()))
            .build();
        let node = Handle::current()
            .create_node()
            .name("client")
            .ip("10.0.1.1".parse().unwrap())
            .build();
        let s = server.clone();
        node.spawn(async move {
            let store = SimStore::connect(server_addr(), Default::default())
                .await
                .unwrap();
            client(store, s).await;
        })
        .await
        .unwrap();
        server
    })
}

#[test]
fn simulated_store_passes_the_conformance_suite() {
    with_store(1, |store, _| async move {
        // A watch that polls merges changes, as TiKV's does.
        conformance::all(store, false).await;
    });
}

fn put(key: &str, version: u64, expect: Option<u64>) -> StoreWrite {
    StoreWrite::Put {
        key: key.into(),
        value: vec![1],
        version,
        expect,
        expires_at: None,
    }
}

#[test]
fn faults_reach_the_client_as_the_contract_says() {
    with_store(2, |store, server| async move {
        let now = 1_000;
        server.set_faults(|f| f.unavailable = true);
        assert!(matches!(
            store.apply(vec![put("k", 1, None)], now).await,
            Err(StoreError::Retryable(_))
        ));
        assert!(matches!(
            store.get("k", now).await,
            Err(StoreError::Retryable(_))
        ));
        server.set_faults(|f| f.unavailable = false);
        // Every answer lost: each apply times out as ambiguous; half of them happened.
        server.set_faults(|f| f.ambiguous_rate = 1.0);
        let mut ambiguous = 0;
        for i in 0..20u64 {
            let key = format!("a{i}");
            match store.apply(vec![put(&key, 1, None)], now).await {
                Err(StoreError::Ambiguous(_)) => ambiguous += 1,
                other => panic!("expected an ambiguous answer, got {other:?}"),
            }
        }
        assert_eq!(ambiguous, 20);
        server.set_faults(|f| f.ambiguous_rate = 0.0);
        let happened = store.scan("a", 100, now).await.unwrap().len();
        assert!(happened > 0 && happened < 20, "{happened} of 20 happened");
        // The settling every caller does turns an ambiguous answer into the truth.
        server.set_faults(|f| f.ambiguous_rate = 0.5);
        for i in 0..10u64 {
            let key = format!("s{i}");
            let r = apply_resolved(&store, vec![put(&key, 1, None)], || now, 60_000).await;
            assert_eq!(r, vec![Ok(())], "{key}");
        }
        server.set_faults(|f| f.ambiguous_rate = 0.0);
        assert_eq!(store.scan("s", 100, now).await.unwrap().len(), 10);
    });
}
