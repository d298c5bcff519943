#!/usr/bin/env bash
# `veeps up` of the bundled example: from a cold data directory (images built, databases
# initialised), then resuming after Ctrl-C, ROUNDS times; each to the first successful
# end-to-end request on every environment that names a check (stage and prod), as `veeps
# up` itself reports it. Prints the cold time, the resumes' median and spread, and their
# ratio. Needs root; uses the example's fixed ports, so nothing else may run `veeps up`.
#
#   bench/up.sh            (builds veeps and the sample apps; ROUNDS=3 by default)
#   VEEPS_BIN=PATH bench/up.sh   (that build of veeps; the sample apps from target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/up.sh needs root" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
[ -n "${VEEPS_BIN:-}" ] || cargo build --release --locked -p veeps >/dev/null 2>&1
# The example's apps and functions, staged as ./run up stages them.
./run stage >/dev/null 2>&1
BIN=${VEEPS_BIN:-$PWD/target/release/veeps}
WORK=$(mktemp -d /tmp/veeps-bench-up.XXXXXX)
export VEEPS_DATA_DIR=$WORK/data
UP=
cleanup() {
  [ -n "$UP" ] && { kill -INT "$UP" 2>/dev/null; wait "$UP" 2>/dev/null || true; }
  "$BIN" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# One `veeps up` until every check answered; prints the seconds of the last one.
one() {
  local log=$WORK/up.log
  "$BIN" up >"$log" 2>&1 &
  UP=$!
  for _ in $(seq 1200); do
    grep -q "veeps is running\|did not converge\|did not answer" "$log" && break
    sleep 0.1
  done
  kill -INT "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  UP=
  if grep -q "did not converge\|did not answer" "$log"; then
    echo "bench/up.sh: veeps up failed:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  grep -o "first successful end-to-end request [0-9.]*s" "$log" | grep -o "[0-9.]*" | sort -n | tail -1
}

cold=$(one)
resumes=()
for _ in $(seq "$ROUNDS"); do
  resumes+=("$(one)")
done
python3 - "$cold" "${resumes[@]}" <<'PY'
import sys, statistics
cold, *r = map(float, sys.argv[1:])
med = statistics.median(r)
print(f"veeps up, cold data directory, to both environments answering: {cold:.1f} s")
print(f"veeps up, resuming after Ctrl-C:  median {med:.1f} s [{min(r):.1f}-{max(r):.1f}] over {len(r)} (goal < 5 s; {med / cold:.2f} of the cold start)")
PY
