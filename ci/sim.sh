#!/usr/bin/env bash
# The deterministic simulation (io-sim + scenarios on madsim). Builds the runner with
# RUSTFLAGS="--cfg madsim" in its own target directory (target-sim), so that simulation
# and ordinary builds do not rebuild each other, with the `sim` profile (release, whole
# program optimised: see Cargo.toml).
#   ci/sim.sh list
#   ci/sim.sh run NAME --seed N [--trace FILE]   exit 0 when every invariant holds
#   ci/sim.sh sweep NAME --seeds A..B [--jobs N] [-v]
#                                                prints each failing seed; N worker processes
#   ci/sim.sh determinism NAME --seed N          runs twice, compares the trace hashes
#   ci/sim.sh all [SEEDS]                        every scenario over seeds 1..SEEDS (default
#                                                200) and a determinism run each, the seeds
#                                                spread over DRONGO_SIM_JOBS workers (default:
#                                                one per core)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
RUSTFLAGS="--cfg madsim" cargo build --quiet --profile sim -p drongo-scenarios --bin drongo-sim \
  --target-dir target-sim
bin=target-sim/sim/drongo-sim
if [ "${1:-}" != "all" ]; then
  exec "$bin" "$@"
fi
seeds=${2:-200}
jobs=${DRONGO_SIM_JOBS:-$(nproc)}
status=0
for name in $("$bin" list | awk '{print $1}'); do
  "$bin" sweep "$name" --seeds "1..$seeds" --jobs "$jobs" || status=1
  "$bin" determinism "$name" --seed "$((seeds + 1))" | tail -n 1 || status=1
done
exit $status
