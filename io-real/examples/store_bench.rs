//! Latency and throughput of a store backend on this machine.
//!
//! `cargo run --release -p drongo --features etcd --example store_bench -- URL [OPS]`
//! URL: `mem:`, `file:DIR`, `etcd://HOST:PORT,...`. Prints p50/p99 of serial get and CAS,
//! CAS throughput with 16 concurrent clients, and writes per second with batches of 64:
//! one batch at a time, and four in flight (the node's committer runs up to 16 group
//! commits at once).

use drongo::store::{AnyStore, Store};
use drongo_core::store::StoreWrite;
use std::time::{Duration, Instant};

fn put(key: &str, version: u64) -> StoreWrite {
    StoreWrite::Put {
        key: key.to_string(),
        value: vec![7u8; 300],
        version,
        expect: version.checked_sub(1).filter(|v| *v > 0),
        expires_at: None,
    }
}

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: store_bench URL [OPS]");
    let ops: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let s = AnyStore::open(&url).await.expect("open store");
    let run = format!("bench-{}", std::process::id());
    let now = 1;
    let key = format!("{run}/k");
    s.apply(vec![put(&key, 1)], now).await.unwrap();

    let mut lat = Vec::new();
    for _ in 0..ops {
        let t = Instant::now();
        s.get(&key, now).await.unwrap();
        lat.push(t.elapsed());
    }
    println!(
        "{url}: get serial      p50 {:.3} ms  p99 {:.3} ms",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    );

    let mut lat = Vec::new();
    for v in 2..ops + 2 {
        let t = Instant::now();
        let r = s.apply(vec![put(&key, v)], now).await.unwrap();
        assert!(r[0].is_ok());
        lat.push(t.elapsed());
    }
    println!(
        "{url}: CAS serial      p50 {:.3} ms  p99 {:.3} ms",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    );

    let clients = 16u64;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (s, run) = (s.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("{run}/c{c}");
            for v in 1..=ops / clients {
                s.apply(vec![put(&key, v)], now).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{url}: CAS 16 clients  {:.0} writes/s",
        (ops / clients * clients) as f64 / secs
    );

    let t = Instant::now();
    let batches = (ops / 64).max(1);
    for b in 0..batches {
        let writes = (0..64)
            .map(|i| put(&format!("{run}/b{b}/{i}"), 1))
            .collect();
        s.apply(writes, now).await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{url}: batches of 64   {:.0} writes/s ({:.2} ms per batch)",
        (batches * 64) as f64 / secs,
        secs * 1000.0 / batches as f64
    );

    let t = Instant::now();
    let lanes = 4u64;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (s, run) = (s.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            for b in (0..batches).filter(|b| b % lanes == lane) {
                let writes = (0..64)
                    .map(|i| put(&format!("{run}/c{b}/{i}"), 1))
                    .collect();
                let r = s.apply(writes, now).await.unwrap();
                assert!(r.iter().all(|x| x.is_ok()));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{url}: batches of 64, 4 in flight  {:.0} writes/s",
        (batches * 64) as f64 / secs
    );
}
