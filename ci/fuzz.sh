#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target: ci/fuzz.sh [SECONDS_PER_TARGET] (default 60).
# Seeds are the message corpus of core/tests/messages plus fuzz/seeds/TARGET; the working
# corpus lives in fuzz/corpus (not committed). A crash fails the run; turn it into a test.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none
for target in parse stream transaction balancer; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  if [ "$target" != transaction ]; then
    cp "$root"/core/tests/messages/*.sip "$corpus"/
  fi
  if [ -d "seeds/$target" ]; then
    cp seeds/"$target"/* "$corpus"/
  fi
  echo "fuzz: $target for ${secs}s"
  cargo fuzz run --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$secs" -max_len=8192 -print_final_stats=1 2>&1 | tail -n 12
  test "${PIPESTATUS[0]}" -eq 0
done
echo "fuzz: all targets ran ${secs}s without a failure"
