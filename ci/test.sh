#!/usr/bin/env bash
# The whole test suite, as README.md and .ci/run call it: installs what the tests need,
# then fmt, clippy, every test, the simulation (its tests and a bounded sweep of every
# scenario), and a bounded fuzz run of each target.
#   DRONGO_FUZZ_SECONDS  seconds per fuzz target (default 60; 0 skips fuzzing)
#   DRONGO_SIM_SEEDS     seeds per scenario in the simulation sweep (default 600; 0 skips it)
#   DRONGO_SIM_JOBS      worker processes of the sweep (default: one per core)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/install.sh
echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --features drongo/etcd,drongo/tikv -- -D warnings
echo "== cargo clippy for the simulation (--cfg madsim, own target dir)"
RUSTFLAGS="--cfg madsim" cargo clippy --release -p drongo --lib --target-dir target-sim -- -D warnings
RUSTFLAGS="--cfg madsim" cargo clippy --release -p drongo-io-sim -p drongo-scenarios --all-targets \
  --target-dir target-sim -- -D warnings
echo "== etcd: 3-member cluster on loopback"
etcd_dir=$(mktemp -d /tmp/drongo-etcd.XXXXXX)
# Stopped and deleted at the end (its data is some hundreds of MB after the suite).
trap 'bash ci/etcd.sh stop "$etcd_dir"; rm -rf "$etcd_dir" "${test_log:-}"' EXIT
DRONGO_ETCD_ENDPOINTS=$(bash ci/etcd.sh start "$etcd_dir" | tail -n 1)
export DRONGO_ETCD_ENDPOINTS DRONGO_ETCD_DIR=$etcd_dir
echo "== cargo test"
test_log=$(mktemp /tmp/drongo-tests.XXXXXX)
cargo test --workspace --features drongo/etcd,drongo/tikv 2>&1 | tee "$test_log"
echo "== simulation tests (trace snapshots, determinism, seeds that found bugs, sim store)"
RUSTFLAGS="--cfg madsim" cargo test --release -p drongo-scenarios --target-dir target-sim 2>&1 \
  | tee -a "$test_log"
sim_seeds=${DRONGO_SIM_SEEDS:-600}
if [ "$sim_seeds" -gt 0 ]; then
  echo "== simulation sweep: every scenario, seeds 1..$sim_seeds, and a determinism run each"
  bash ci/sim.sh all "$sim_seeds"
fi
secs=${DRONGO_FUZZ_SECONDS:-60}
if [ "$secs" -gt 0 ]; then
  echo "== fuzz (${secs}s per target)"
  bash ci/fuzz.sh "$secs"
fi
# One closing line for the whole suite (the last cargo summary is a crate's doc-tests).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$test_log"
