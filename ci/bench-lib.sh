# Helpers shared by the SIPp benchmarks (sourced, not run).

# successes OUTFILE -> the final "Successful call" count SIPp printed (0 if none)
successes() {
  local n
  n=$(grep -a 'Successful call' "$1" | tail -1 | awk '{print $NF}')
  echo "${n:-0}"
}

# port_busy PORT -> whether some process has a UDP socket bound to 127.0.0.1:PORT
port_busy() { ss -Hlun "sport = :$1" | grep -q .; }

# ratio A B -> A/B with two decimals, or n/a when B is 0
ratio() { if [ "$2" -gt 0 ]; then echo "scale=2; $1 / $2" | bc; else echo "n/a"; fi; }

# best STEP KIND RATES TARGET LABEL -> highest rate whose step passed (< 0.1 % failed)
# twice in a row, stepping up until one fails; table rows on stderr. STEP is a function
# called as `STEP TARGET RATE KIND` that prints the failed percentage.
best() {
  local step=$1 kind=$2 rates=$3 target=$4 label=$5 top=0 f run r
  for r in $rates; do
    for run in 1 2; do
      f=$("$step" "$target" "$r" "$kind")
      printf '%-9s %-8s %8s %9s%%  (run %s)\n' "$label" "$kind" "$r/s" "$f" "$run" >&2
      [ "$(echo "$f < 0.1" | bc)" = 1 ] || break
    done
    if [ "$(echo "$f < 0.1" | bc)" = 1 ]; then top=$r; else break; fi
  done
  echo "$top"
}

# stop_started: stops every process whose pid is in the array `pids` (SIGTERM first:
# Kamailio's main process stops its workers; then SIGKILL for anything left).
stop_started() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# drop_work: deletes the bench directory `$work` (store data and SIPp logs grow by
# gigabytes over a full run), unless DRONGO_KEEP_BENCH is set.
drop_work() {
  if [ -n "${DRONGO_KEEP_BENCH:-}" ]; then echo "bench files kept in $work" >&2; else rm -rf "$work"; fi
}
