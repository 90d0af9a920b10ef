#!/usr/bin/env bash
# Calls per second and REGISTERs per second: SIPp UAC -> TARGET -> SIPp UAS on loopback,
# for Drongo (durable dialogs on the embedded store) and for Kamailio (tm + dialog + rr +
# usrloc, one worker per core) in the same run, stepping the rate up until each fails.
# A call step passes when under 0.1 % of its calls failed on the caller's side *and* on the
# callee's (INVITE, ACK and BYE all seen and answered), and it passes twice in a row. Prints
# a table per target, the highest passing rate of each, and their ratio. Every process it
# starts is stopped by its pid.
#
#   ci/bench-cps.sh [--smoke]
#   CPS_RATES="500 1000 ..."  REG_RATES="2000 4000 ..."  SECS=10 (seconds of load per step)
#   DRONGO_KEEP_BENCH=1 keeps the logs and the store (deleted otherwise)
# --smoke: one low step of each, for CI (checks the script and both targets work).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/install.sh --bench
. ci/bench-lib.sh
CPS_RATES=${CPS_RATES:-"500 1000 1500 2000 2500 3000 3500 4000 4500 5000 5500 6000 7000 8000"}
REG_RATES=${REG_RATES:-"4000 8000 12000 16000 20000 24000 28000 32000 40000"}
SECS=${SECS:-10}
if [ "${1:-}" = "--smoke" ]; then
  CPS_RATES=200; REG_RATES=500; SECS=3
fi
cargo build --profile production -p drongo >/dev/null 2>&1 || cargo build --profile production -p drongo
work=$(mktemp -d /tmp/drongo-bench.XXXXXX)
pids=()
cleanup() {
  stop_started
  drop_work
}
trap cleanup EXIT

# Drongo on 5060 with a static route for "service" to the UAS; Kamailio on 5070.
cat > "$work/drongo.toml" <<EOF
[[routes]]
user = "service"
target = "sip:127.0.0.1:5080"
EOF
target/production/drongo run --sip 127.0.0.1:5060 --admin 127.0.0.1:9060 \
  --data "$work/data" --config "$work/drongo.toml" 2>"$work/drongo.log" &
pids+=($!)
# As many Kamailio workers as there are cores (Drongo gets a full multi-threaded runtime).
sed "s/^children=.*/children=$(nproc)/" "$root/ci/kamailio-baseline.cfg" > "$work/kamailio.cfg"
kamailio -f "$work/kamailio.cfg" -DD -E -m 1024 -M 32 2>"$work/kamailio.log" &
pids+=($!)
sleep 1.5

uas=ci/sipp/uas_bench.xml
uac=io-real/tests/sipp/uac.xml
reg=ci/sipp/register_bench.xml
sipp_common=(-i 127.0.0.1 -nostdin -buff_size 4194304 -default_behaviors all,-abortunexp)

# step TARGET_PORT RATE KIND -> prints "fail_percent" (of the worse side for calls)
step() {
  local port=$1 rate=$2 kind=$3 m=$(( $2 * SECS )) out ok
  out="$work/$kind-$port-$rate.out"
  if [ "$kind" = call ]; then
    # The previous step's callee must be gone before this one binds its port.
    for _ in $(seq 50); do port_busy 5080 || break; sleep 0.1; done
    # The callee runs for exactly m calls (or until its timeout), so its final count says
    # how many calls it saw through to the 200 to BYE.
    timeout $((SECS + 15)) sipp -sf "$uas" -p 5080 -m "$m" "${sipp_common[@]}" \
      > "$out.uas" 2>&1 &
    local uas_pid=$!
    sleep 0.3
    timeout $((SECS + 8)) sipp -sf "$uac" "127.0.0.1:$port" -p 5090 -s service -r "$rate" -m "$m" \
      -d 1000 -l $((rate * 4 + 100)) "${sipp_common[@]}" > "$out" 2>&1 || true
    for _ in $(seq 50); do kill -0 "$uas_pid" 2>/dev/null || break; sleep 0.1; done
    kill "$uas_pid" 2>/dev/null || true
    wait "$uas_pid" 2>/dev/null || true
    local caller callee
    caller=$(successes "$out")
    callee=$(successes "$out.uas")
    ok=$(( caller < callee ? caller : callee ))
    sleep 0.5
  else
    timeout $((SECS + 8)) sipp -sf "$reg" "127.0.0.1:$port" -p 5091 -r "$rate" -m "$m" \
      -l $((rate * 4 + 100)) "${sipp_common[@]}" > "$out" 2>&1 || true
    ok=$(successes "$out")
  fi
  echo "scale=3; 100 * ($m - $ok) / $m" | bc
}

echo "target    kind         rate   failed"
k_cps=$(best step call "$CPS_RATES" 5070 kamailio)
d_cps=$(best step call "$CPS_RATES" 5060 drongo)
k_reg=$(best step reg "$REG_RATES" 5070 kamailio)
d_reg=$(best step reg "$REG_RATES" 5060 drongo)
echo
echo "calls/s (1 s calls, <0.1% failed): kamailio $k_cps, drongo $d_cps, ratio drongo/kamailio $(ratio "$d_cps" "$k_cps")"
echo "REGISTER/s (<0.1% failed):         kamailio $k_reg, drongo $d_reg, ratio drongo/kamailio $(ratio "$d_reg" "$k_reg")"
curl -s 127.0.0.1:9060/metrics | grep -E '^drongo_(calls|store)' || true
