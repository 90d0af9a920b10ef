#!/usr/bin/env bash
# Calls and REGISTERs per second through a cluster of three Drongo nodes on the 3-member
# etcd of ci/etcd.sh, every dialog and every binding replicated and durable in etcd (and
# every binding followed by every member's watch), with Kamailio's single node (in-memory
# dialogs and usrloc, one worker per core) in the same run on the same box. SIPp spreads
# the load evenly over the nodes: one caller (or registering UA) per node, each at a third
# of the rate, and for calls one callee behind all three (Drongo routes user "service" to
# it). A step passes when under 0.1 % of its calls failed on the callers' side (summed)
# *and* on the callee's (for REGISTERs: of the 200s the UAs got), and it passes twice in a
# row. Every process it starts is stopped by its pid.
#
# Lookups are measured as calls to a registered callee (each INVITE looks its callee up).
#
#   ci/bench-cluster.sh [--smoke]
#   CPS_RATES="300 600 ..."  REG_RATES="1000 2000 ..."  SECS=10 (seconds of load per step)
#   STRATEGY=lazy|hot-standby|none ([cluster] strategy of the nodes; default lazy)
#   DRONGO_KEEP_BENCH=1 keeps the logs and etcd's data (deleted otherwise)
# --smoke: one low step, for CI (checks the script, the cluster and Kamailio work).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ci/install.sh --bench
. ci/bench-lib.sh
CPS_RATES=${CPS_RATES:-"300 600 900 1200 1500 1800 2100 2400 3000 3600"}
REG_RATES=${REG_RATES:-"1000 2000 3000 4000 5000 6000 7000 8000 10000 12000 14000 16000"}
SECS=${SECS:-10}
if [ "${1:-}" = "--smoke" ]; then
  CPS_RATES=150; REG_RATES=300; SECS=3
fi
cargo build --profile production -p drongo --features etcd >/dev/null 2>&1 || cargo build --profile production -p drongo --features etcd
work=$(mktemp -d /tmp/drongo-bench-cluster.XXXXXX)
pids=()
cleanup() {
  stop_started
  bash ci/etcd.sh stop "$work/etcd" >/dev/null 2>&1 || true
  drop_work
}
trap cleanup EXIT

endpoints=$(bash ci/etcd.sh start "$work/etcd" | tail -n1)
store="etcd://$endpoints/bench-$$"
cat > "$work/drongo.toml" <<CONF
[cluster]
strategy = "${STRATEGY:-lazy}"

[[routes]]
user = "service"
target = "sip:127.0.0.1:5080"
CONF
nodes="5061 5062 5063"
for n in 1 2 3; do
  target/production/drongo run --sip "127.0.0.1:506$n" --admin "127.0.0.1:906$n" \
    --data "$work/data$n" --store "$store" --node-id "$n" --config "$work/drongo.toml" \
    2>"$work/drongo$n.log" &
  pids+=($!)
done
sed "s/^children=.*/children=$(nproc)/" "$root/ci/kamailio-baseline.cfg" > "$work/kamailio.cfg"
kamailio -f "$work/kamailio.cfg" -DD -E -m 1024 -M 32 2>"$work/kamailio.log" &
pids+=($!)
# The members must see each other before the load starts.
for _ in $(seq 100); do
  seen=$(curl -s 127.0.0.1:9061/cluster | grep -o '"sip":' | wc -l || true)
  [ "$seen" -ge 3 ] && break   # three members
  sleep 0.1
done
curl -s 127.0.0.1:9061/cluster || { echo "node 1 has no /cluster (DRONGO_KEEP_BENCH=1 keeps the logs)" >&2; exit 1; }

uas=ci/sipp/uas_bench.xml
uac=io-real/tests/sipp/uac.xml
reg=ci/sipp/register_bench.xml
sipp_common=(-i 127.0.0.1 -nostdin -buff_size 4194304 -default_behaviors all,-abortunexp)

# step "PORT..." RATE call|lookup|reg -> failed percentage (for calls the worse of the
# callers' sum and the callee), the rate spread evenly over the ports. `lookup` calls user
# "callee", the UAS's registered binding: each call's INVITE looks its callee up (Drongo:
# the registrar's copy every member keeps; Kamailio: usrloc), where `call` goes to a
# static route.
step() {
  local ports=($1) rate=$2 kind=$3 n m each out callers=0 callee ok i=0 uac_pids=() user=service
  [ "$kind" = lookup ] && user=callee
  n=${#ports[@]}
  each=$(( rate * SECS / n ))
  m=$(( each * n ))
  out="$work/$kind-${ports[0]}-$rate"
  if [ "$kind" = reg ]; then
    # Each SIPp registers AORs of its own (u<pid>x<n>): every REGISTER writes a binding.
    for p in "${ports[@]}"; do
      i=$((i + 1))
      timeout $((SECS + 8)) sipp -sf "$reg" "127.0.0.1:$p" -p $((5190 + i)) -r $(( rate / n )) \
        -m "$each" -l $(( rate * 4 / n + 100 )) "${sipp_common[@]}" > "$out.reg$i" 2>&1 &
      uac_pids+=($!)
    done
    for p in "${uac_pids[@]}"; do wait "$p" || true; done
    for j in $(seq "$n"); do callers=$(( callers + $(successes "$out.reg$j") )); done
    sleep 0.5
    echo "scale=3; 100 * ($m - $callers) / $m" | bc
    return
  fi
  for _ in $(seq 50); do port_busy 5080 || break; sleep 0.1; done
  timeout $((SECS + 15)) sipp -sf "$uas" -p 5080 -m "$m" "${sipp_common[@]}" > "$out.uas" 2>&1 &
  local uas_pid=$!
  sleep 0.3
  for p in "${ports[@]}"; do
    i=$((i + 1))
    timeout $((SECS + 8)) sipp -sf "$uac" "127.0.0.1:$p" -p $((5090 + i)) -s "$user" \
      -r $(( rate / n )) -m "$each" -d 1000 -l $(( rate * 4 / n + 100 )) "${sipp_common[@]}" \
      > "$out.uac$i" 2>&1 &
    uac_pids+=($!)
  done
  for p in "${uac_pids[@]}"; do wait "$p" || true; done
  for _ in $(seq 50); do kill -0 "$uas_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$uas_pid" 2>/dev/null || true
  wait "$uas_pid" 2>/dev/null || true
  for j in $(seq "$n"); do callers=$(( callers + $(successes "$out.uac$j") )); done
  callee=$(successes "$out.uas")
  ok=$(( callers < callee ? callers : callee ))
  sleep 0.5
  echo "scale=3; 100 * ($m - $ok) / $m" | bc
}

echo "target    kind         rate   failed"
k_cps=$(best step call "$CPS_RATES" 5070 kamailio)
d_cps=$(best step call "$CPS_RATES" "$nodes" cluster)
k_reg=$(best step reg "$REG_RATES" 5070 kamailio)
d_reg=$(best step reg "$REG_RATES" "$nodes" cluster)
# The callee registered (once each: 3600 s) for the lookup steps.
for target in 5070 5061; do
  timeout 10 sipp -sf ci/sipp/register_callee.xml "127.0.0.1:$target" -p 5189 -m 1 \
    "${sipp_common[@]}" > "$work/register-callee-$target" 2>&1
  [ "$(successes "$work/register-callee-$target")" = 1 ] || { echo "callee not registered at $target" >&2; exit 1; }
done
k_look=$(best step lookup "$CPS_RATES" 5070 kamailio)
d_look=$(best step lookup "$CPS_RATES" "$nodes" cluster)
echo
echo "calls/s (1 s calls, <0.1% failed): kamailio (one node, in memory) $k_cps, drongo cluster of 3 on etcd (strategy ${STRATEGY:-lazy}) $d_cps, ratio $(ratio "$d_cps" "$k_cps")"
echo "REGISTER/s (<0.1% failed):         kamailio (one node, in memory) $k_reg, drongo cluster of 3 on etcd $d_reg, ratio $(ratio "$d_reg" "$k_reg")"
echo "lookups/s (calls to a registered callee, each INVITE's lookup): kamailio $k_look, drongo cluster of 3 $d_look, ratio $(ratio "$d_look" "$k_look")"
for n in 1 2 3; do
  echo "node $n: $(curl -s "127.0.0.1:906$n/metrics" | grep -E '^drongo_(calls_answered|registrations|lookups_read_through)' | tr '\n' ' ' || true)"
done
