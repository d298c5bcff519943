#!/usr/bin/env bash
# The data plane outliving the control plane, measured on the bundled example: wrk at
# CONNECTIONS keep-alive connections through stage's public balancer (127.0.0.1:8443)
# while, in turn,
#   kill9    veeps (the control plane) is killed with -9 and started again,
#   upgrade  veeps is killed and started again as another build (a copy of the binary: the
#            balancers hand their sockets to processes of the new build and drain),
#   instance one frontend instance's application is killed with -9.
# and, for comparison, `none` (the same load, nothing happening). For each, prints the
# requests answered, the failed ones (socket errors and non-2xx, as
# wrk counts them) and the slowest answer (the longest a client waited). Each phase runs
# ROUNDS times (3 by default): medians and spread. Benchmarks are not tests: nothing here
# fails on a figure.
#
#   bench/dataplane.sh [SECONDS] [CONNECTIONS]      (default 20 s, 64 connections; root)
#   VEEPS_BIN=/path/to/veeps bench/dataplane.sh     (measure that binary)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-20}
CONNS=${2:-64}
ROUNDS=${ROUNDS:-3}
[ "$(id -u)" = 0 ] || { echo "bench/dataplane.sh needs root" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -n "${VEEPS_BIN:-}" ] || cargo build --release --locked -p veeps >/dev/null 2>&1
# The example's apps and functions, staged as ./run up stages them.
./run stage >/dev/null 2>&1
BIN=${VEEPS_BIN:-$PWD/target/release/veeps}
WORK=$(mktemp -d /tmp/veeps-bench-dp.XXXXXX)
DATA=$WORK/data
API=$((20000 + RANDOM % 10000))
export VEEPS_ADDR=http://127.0.0.1:$API VEEPS_DATA_DIR=$DATA
UP=
cleanup() {
  [ -n "$UP" ] && kill -INT "$UP" 2>/dev/null && wait "$UP" 2>/dev/null || true
  "$BIN" down >/dev/null 2>&1 || true
  # (`|| true`: a plane already gone is no error, and `set -e` would end the cleanup here.)
  for f in "$DATA"/lb/*/pid; do [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null || true; done
  # Processes stopping write their last files meanwhile (a removal racing them fails):
  # removed again until it holds.
  for _ in $(seq 100); do rm -rf "$WORK" 2>/dev/null && [ ! -e "$WORK" ] && break; sleep 0.05; done
  true
}
trap cleanup EXIT

start() { # start PROGRAM LOG: veeps up, waiting for both end-to-end checks
  "$1" up examples/veeps-hosting/live --listen "127.0.0.1:$API" \
    --s3-listen 127.0.0.1:$((API + 1)) --s3-website-listen 127.0.0.1:$((API + 2)) >"$2" 2>&1 &
  UP=$!
  for _ in $(seq 1 600); do
    [ "$(grep -c 'first successful end-to-end request' "$2" || true)" -ge 2 ] && return 0
    kill -0 "$UP" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.5
  done
  echo "veeps up did not come up" >&2; exit 1
}

act() { # the disruption of one phase, a few seconds into the load
  case $1 in
    none) ;;
    kill9)
      kill -9 "$UP"; wait "$UP" 2>/dev/null || true
      start "$BIN" "$WORK/up.log" ;;
    upgrade)
      cp -f "$BIN" "$WORK/veeps-next-$RANDOM"
      local next; next=$(ls -t "$WORK"/veeps-next-* | head -1)
      kill -9 "$UP"; wait "$UP" 2>/dev/null || true
      start "$next" "$WORK/up.log" ;;
    instance)
      local shim init app
      shim=$("$BIN" instances stage --group sample-app-frontend --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["instances"][0]["pid"])')
      init=$(cat "/proc/$shim/task/$shim/children" | awk '{print $1}')
      app=$(cat "/proc/$init/task/$init/children" | awk '{print $1}')
      kill -9 "$app" ;;
  esac
}

URL=https://127.0.0.1:8443/sample-app-frontend/greeting
declare -A OKS FAILS SLOW
start "$BIN" "$WORK/up.log"
for round in $(seq 1 "$ROUNDS"); do
  for phase in none kill9 upgrade instance; do
    wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "$URL" >"$WORK/wrk.out" 2>&1 &
    W=$!
    sleep 4
    act "$phase"
    wait "$W"
    ok=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
    errs=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$WORK/wrk.out")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/wrk.out")
    max=$(awk '/Latency/ && !/Distribution/ {print $4; exit}' "$WORK/wrk.out")
    OKS[$phase]+="${ok:-0} "; FAILS[$phase]+="$(( ${errs:-0} + ${non2xx:-0} )) "; SLOW[$phase]+="${max:-?} "
    echo "round $round $phase: ${ok:-0} requests, $(( ${errs:-0} + ${non2xx:-0} )) failed, slowest ${max:-?}"
    sleep 2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " [" a[1] "-" a[NR] "]"}'; }
echo
echo "phase      requests (median [min-max])   failed          slowest answers"
for phase in none kill9 upgrade instance; do
  printf '%-10s %-29s %-15s %s\n' "$phase" "$(echo "${OKS[$phase]}" | median)" \
    "$(echo "${FAILS[$phase]}" | median)" "${SLOW[$phase]}"
done
trap - EXIT
cleanup
