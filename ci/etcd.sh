#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, from Debian's etcd-server.
#   ci/etcd.sh start DIR     start (fresh data in DIR), wait until healthy, print endpoints
#   ci/etcd.sh stop DIR      stop the members
#   ci/etcd.sh restart DIR NAME   start member NAME (d1, d2, d3) again on its data
# Members: d1 client 127.0.0.1:12379 peer :12380, d2 :22379/:22380, d3 :32379/:32380.
# Each member's pid is in DIR/NAME.pid (the conformance suite kills the leader by pid).
set -euo pipefail
cmd=${1:?start|stop|restart}
dir=${2:?data directory}
cluster="d1=http://127.0.0.1:12380,d2=http://127.0.0.1:22380,d3=http://127.0.0.1:32380"
endpoints="127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379"
ports() { case $1 in d1) echo "12379 12380";; d2) echo "22379 22380";; d3) echo "32379 32380";; esac; }
member() { # name state
  local name=$1 state=$2 client peer
  read -r client peer < <(ports "$name")
  nohup etcd --name "$name" --data-dir "$dir/$name" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster-token drongo-ci --initial-cluster "$cluster" --initial-cluster-state "$state" \
    --heartbeat-interval 50 --election-timeout 500 \
    --logger zap --log-outputs "$dir/$name.log" > "$dir/$name.stdout" 2>&1 &
  echo $! > "$dir/$name.pid"
}
healthy() {
  for _ in $(seq 100); do
    if ETCDCTL_API=3 etcdctl --dial-timeout=1s --command-timeout=2s --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "etcd cluster did not become healthy; logs in $dir" >&2
  return 1
}
case $cmd in
start)
  rm -rf "$dir"; mkdir -p "$dir"
  for n in d1 d2 d3; do member "$n" new; done
  healthy
  echo "$endpoints"
  ;;
restart)
  member "${3:?member name}" existing
  ;;
stop)
  for n in d1 d2 d3; do
    if [ -f "$dir/$n.pid" ]; then kill "$(cat "$dir/$n.pid")" 2>/dev/null || true; fi
  done
  # Wait for them to go (up to 10 s), so that a start right after finds the ports free.
  for n in d1 d2 d3; do
    if [ -f "$dir/$n.pid" ]; then
      pid=$(cat "$dir/$n.pid")
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  ;;
*) echo "usage: $0 start|stop|restart DIR [NAME]" >&2; exit 2 ;;
esac
