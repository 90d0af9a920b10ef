#!/usr/bin/env bash
# Failover time with real processes on a 3-member etcd started here: a call through node 1,
# kill -9 node 1, the caller's INFO to node 2 every 100 ms until one is answered 200 (see
# io-real/tests/failover.rs). 20 runs with lease_ttl_ms 1000 and 20 with the default 2000,
# for each of the strategies lazy and hot-standby.
#   ci/bench-failover.sh [RUNS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/install.sh --bench
runs=${1:-20}
dir=$(mktemp -d /tmp/drongo-failover.XXXXXX)
trap 'bash ci/etcd.sh stop "$dir/etcd"; rm -rf "$dir"' EXIT
DRONGO_ETCD_ENDPOINTS=$(bash ci/etcd.sh start "$dir/etcd" | tail -n 1)
export DRONGO_ETCD_ENDPOINTS
for strategy in lazy hot-standby; do
  for ttl in 1000 2000; do
    DRONGO_FAILOVER_REPS=$runs DRONGO_FAILOVER_TTL_MS=$ttl DRONGO_FAILOVER_STRATEGY=$strategy \
      cargo test --release -p drongo --features etcd --test failover failover_time -- --nocapture 2>&1 \
      | grep '^failover'
  done
done
