#!/usr/bin/env bash
# Criterion benchmark of the core: parse+validate vs bare rsip parsing, and a non-INVITE
# transaction round. Prints messages per second and the ratios measured in this run.
# ci/bench-core.sh [--quick]   (--quick: short measurement, for CI smoke runs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
args=()
if [ "${1:-}" = "--quick" ]; then
  args=(--warm-up-time 1 --measurement-time 2)
fi
log=$(mktemp)
if ! cargo bench -p drongo-core --bench core -- "${args[@]}" >"$log" 2>&1; then
  tail -n 40 "$log"
  exit 1
fi
est() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mean']['point_estimate'])" \
  "target/criterion/$1/new/estimates.json"; }
rsip=$(est parse/rsip)
ours=$(est parse/drongo_parse_validate)
round=$(est transaction/non_invite_round)
python3 - "$rsip" "$ours" "$round" <<'PY'
import sys
rsip, ours, round_ = (float(x) for x in sys.argv[1:])
print(f"rsip parse (INVITE with SDP):   {1e9/rsip:12,.0f} msg/s  ({rsip/1000:.2f} us)")
print(f"drongo parse + validate:        {1e9/ours:12,.0f} msg/s  ({ours/1000:.2f} us)")
print(f"ratio drongo/rsip (throughput): {rsip/ours:.2f}")
print(f"non-INVITE transaction round:   {1e9/round_:12,.0f} rounds/s ({round_/1000:.2f} us; 2 messages parsed per round)")
PY
# The two criterion runs above are taken one after the other; on a shared VM their ratio
# drifts. The alternating measurement is the one to compare against the target (>= 1.0).
cargo bench -p drongo-core --bench parse_ratio 2>/dev/null | grep alternating
