//! The runtime under a store outage and a flood: 2,000 REGISTERs a second while the store
//! fails every call for 10 s, with queues small enough to fill. The node loop must never
//! wait on the committer nor the committer on the node: OPTIONS (which needs no write) keep
//! being answered throughout, new work beyond the overload bound gets 503 with
//! Retry-After, and once the store is back a REGISTER is answered 200 again.

use drongo::runtime::{run, RunConfig};
use drongo::store::{Change, MemStore, Store, StoreError};
use drongo_core::config::Config;
use drongo_core::store::{StoreWrite, StoredRecord};
use drongo_core::UnixMillis;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A store that answers every call `Retryable` while `down` is set.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: MemStore,
    down: Arc<AtomicBool>,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Relaxed) {
            Err(StoreError::Retryable("leader election".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for FlakyStore {
    async fn watch(&self, prefix: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, StoreError> {
        self.inner.watch(prefix).await
    }

    async fn get(&self, key: &str, now: UnixMillis) -> Result<Option<StoredRecord>, StoreError> {
        self.check()?;
        self.inner.get(key, now).await
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        now: UnixMillis,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.check()?;
        self.inner.scan(prefix, limit, now).await
    }

    async fn apply(
        &self,
        writes: Vec<StoreWrite>,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.check()?;
        self.inner.apply(writes, now).await
    }
}

const SIP: u16 = 26560;

fn register(user: &str, port: u16) -> String {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{user}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=t{user}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: c{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n\
         Expires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn options(n: u32, port: u16) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKo{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: probe{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Waits up to `limit` for a message starting with `start` on `sock`.
fn answer(sock: &UdpSocket, start: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.starts_with(start) {
                return Some(text);
            }
        }
    }
    None
}

#[test]
fn store_outage_under_a_flood_neither_deadlocks_nor_blocks_the_node() {
    let store = FlakyStore::default();
    let down = store.down.clone();
    let mut core = Config::default();
    core.limits.max_uncommitted_batches = 2_000;
    let rc = RunConfig {
        sip: SocketAddr::from(([127, 0, 0, 1], SIP)),
        advertise: SocketAddr::from(([127, 0, 0, 1], SIP)),
        admin: SocketAddr::from(([127, 0, 0, 1], SIP + 1000)),
        core,
        node_id: 1,
        seed: 7,
        clock: Default::default(),
        // Small queues, so that the flood fills them.
        queue: 64,
        cluster: false,
        unfenced: false,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let node = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(rc, store, async {
            let _ = stop_rx.await;
        }))
    });
    std::thread::sleep(Duration::from_millis(500));

    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flood_port = flood.local_addr().unwrap().port();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let probe_port = probe.local_addr().unwrap().port();
    let target = ("127.0.0.1", SIP);

    // The store goes down; 2,000 REGISTERs a second for 10 s, each for a new AOR (each a
    // write), and an OPTIONS probe every 500 ms that must be answered within 1 s.
    down.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut sent = 0u32;
    let mut probes = 0u32;
    let mut slow_probes = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        let due = (start.elapsed().as_millis() as u32) * 2;
        while sent < due {
            let _ = flood.send_to(register(&format!("u{sent}"), flood_port).as_bytes(), target);
            sent += 1;
        }
        if start.elapsed() >= Duration::from_millis(500 * u64::from(probes)) {
            let asked = Instant::now();
            probe
                .send_to(options(probes, probe_port).as_bytes(), target)
                .unwrap();
            if answer(&probe, "SIP/2.0 200", Duration::from_secs(1)).is_none() {
                slow_probes.push(probes);
            }
            let _ = asked;
            probes += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // What the flood got back meanwhile: overload answers carry Retry-After.
    flood
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut refused = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n) = flood.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 503") {
            assert!(text.contains("Retry-After: "), "{text}");
            refused += 1;
        }
    }
    // The store is back: the node recovers and takes a new registration.
    down.store(false, Ordering::Relaxed);
    let healed = Instant::now();
    let mut registered = false;
    let mut n = 0;
    while !registered && healed.elapsed() < Duration::from_secs(15) {
        probe
            .send_to(
                register(&format!("after{n}"), probe_port).as_bytes(),
                target,
            )
            .unwrap();
        registered = answer(&probe, "SIP/2.0 200", Duration::from_millis(500)).is_some();
        n += 1;
    }
    let _ = stop_tx.send(());
    let result = node.join().unwrap();
    println!(
        "sent {sent} REGISTERs, {refused} refused with 503, {probes} probes ({} slow), \
         registered again {:?} after the store came back",
        slow_probes.len(),
        healed.elapsed()
    );
    assert!(sent >= 19_000, "the flood was not 2,000/s: {sent}");
    assert!(
        slow_probes.is_empty(),
        "OPTIONS probes unanswered within 1 s during the outage: {slow_probes:?}"
    );
    assert!(
        refused > 0,
        "nothing was refused: the overload bound was never met"
    );
    assert!(
        registered,
        "no REGISTER answered 200 within 15 s of the store coming back"
    );
    assert!(result.is_ok(), "{result:?}");
}
