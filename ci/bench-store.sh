#!/usr/bin/env bash
# Store backends' get/CAS latency and throughput on loopback: in-memory, embedded redb
# (one fsync per apply) and a 3-member etcd cluster started here. ci/bench-store.sh [OPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/install.sh --bench
ops=${1:-2000}
cargo build --release -p drongo --features etcd --example store_bench
dir=$(mktemp -d /tmp/drongo-store-bench.XXXXXX)
trap 'bash ci/etcd.sh stop "$dir/etcd"; rm -rf "$dir"' EXIT
eps=$(bash ci/etcd.sh start "$dir/etcd" | tail -n 1)
for url in mem: "file:$dir/redb" "etcd://$eps"; do
  target/release/examples/store_bench "$url" "$ops"
done
