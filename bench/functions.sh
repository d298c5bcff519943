#!/usr/bin/env bash
# Functions: cold starts and warm invocations of a `provided` Rust function (the echo
# function on the official lambda_runtime crate), through its function URL, beside the
# same code run as a plain HTTP server called directly, in interleaved rounds (medians,
# spread, ratios). Goals: a cold start under 20 ms outside a VPC; a warm invocation's
# overhead over the direct call under 0.5 ms. The functions have 1769 MB, which is one
# whole CPU as on Lambda (at 128 MB a function gets 7 % of one, and CFS throttling then
# dominates every latency; MEMORY=128 shows it).
#
#   bench/functions.sh [SECONDS]      (wrk for the warm runs)
#   ROUNDS=5 COLD=20 VEEPS_BIN=/path/to/veeps bench/functions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
ROUNDS=${ROUNDS:-3}
COLD=${COLD:-10}
MEMORY=${MEMORY:-1769}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
  ECHO=${ECHO_BIN:-$(dirname "$VEEPS_BIN")/sample-fn-echo}
else
  cargo build --release --locked -p veeps -p sample-apps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
  ECHO=$PWD/target/release/sample-fn-echo
fi
WORK=$(mktemp -d /tmp/veeps-bench-fn.XXXXXX)
BASE=$((30000 + RANDOM % 10000))
API=$BASE S3=$((BASE + 1)) DIRECT=$((BASE + 3))
cleanup() {
  set +e
  # The VPC's namespaces go with a destroy.
  [ -n "${SERVER:-}" ] && "$BIN" destroy "$WORK/env" --auto-approve >/dev/null 2>&1
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
  [ -n "${PLAIN:-}" ] && { kill "$PLAIN" 2>/dev/null; wait "$PLAIN" 2>/dev/null; }
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$API
"$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$S3" \
  --s3-website-listen "127.0.0.1:$((BASE + 2))" --dns-listen off 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 200); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.05; done

# One warm function, and a fresh one for every cold start measured.
mkdir -p "$WORK/env" "$WORK/echo"
cp "$ECHO" "$WORK/echo/bootstrap"
N=$((ROUNDS * COLD))
cat >"$WORK/env/main.hcl" <<HCL
resource "function" "warm" {
  name    = "warm"
  code    = "$WORK/echo"
  runtime = "provided"
  memory  = $MEMORY
}
resource "function_url" "warm" {
  function = function.warm.name
}
resource "function" "cold" {
  count   = $N
  name    = "cold\${count.index}"
  code    = "$WORK/echo"
  runtime = "provided"
  memory  = $MEMORY
}
resource "function_url" "cold" {
  count    = $N
  function = function.cold[count.index].name
}
# The same, each environment at an endpoint of its own in a VPC's subnet.
resource "vpc" "v" {
  name       = "fnbench"
  cidr_block = "10.233.0.0/16"
}
resource "subnet" "app" {
  vpc_id     = vpc.v.id
  cidr_block = "10.233.1.0/24"
  tier       = "private-app"
}
resource "security_group" "fn" {
  vpc_id = vpc.v.id
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "function" "vpc" {
  count           = $COLD
  name            = "vpc\${count.index}"
  code            = "$WORK/echo"
  runtime         = "provided"
  memory          = $MEMORY
  subnets         = [subnet.app.id]
  security_groups = [security_group.fn.id]
}
resource "function_url" "vpc" {
  count    = $COLD
  function = function.vpc[count.index].name
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
PORT=$DIRECT "$ECHO" 2>/dev/null &
PLAIN=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$DIRECT/" && break; sleep 0.05; done
url() { echo "--resolve $1.lambda-url.localhost:$S3:127.0.0.1 http://$1.lambda-url.localhost:$S3/"; }
# shellcheck disable=SC2046
curl -sf --noproxy '*' $(url warm) >/dev/null || { echo "the function URL does not answer" >&2; tail "$WORK/server.log" >&2; exit 1; }

ms() { # wrk's latency (like 95.00us, 1.20ms, 1.01s) in ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
warm() { # host port -> "p50 p99 rps" (one connection for latency, 8 for throughput)
  local out rps
  out=$(wrk -t1 -c1 -d"${DUR}s" --latency -H "Host: $1" "http://127.0.0.1:$2/" 2>/dev/null)
  rps=$(wrk -t2 -c8 -d"${DUR}s" -H "Host: $1" "http://127.0.0.1:$2/" 2>/dev/null | awk '/Requests\/sec/ {print $2}')
  echo "$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')") $(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')") $rps"
}
declare -a C FP50 FP99 FR DP50 DP99 DR
i=0
for r in $(seq "$ROUNDS"); do
  for _ in $(seq "$COLD"); do
    # shellcheck disable=SC2046
    t=$(curl -s --noproxy '*' -o /dev/null -w '%{time_total}' $(url "cold$i"))
    C+=("$(awk -v t="$t" 'BEGIN { printf "%.3f", t * 1000 }')")
    i=$((i + 1))
  done
  read -r a b c < <(warm "warm.lambda-url.localhost:$S3" "$S3"); FP50+=("$a"); FP99+=("$b"); FR+=("$c")
  read -r a b c < <(warm "127.0.0.1:$DIRECT" "$DIRECT"); DP50+=("$a"); DP99+=("$b"); DR+=("$c")
  echo "round $r: function p50 ${FP50[-1]} ms p99 ${FP99[-1]} ms ${FR[-1]} req/s; direct p50 ${DP50[-1]} ms p99 ${DP99[-1]} ms ${DR[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pct() { printf '%s\n' "${@:2}" | sort -g | awk -v q="$1" '{a[NR]=$1} END {i=int(NR*q+0.999); if (i<1) i=1; print a[i]}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
fp50=$(median "${FP50[@]}"); dp50=$(median "${DP50[@]}")
fr=$(median "${FR[@]}"); dr=$(median "${DR[@]}")
echo
echo "cold start (request to answer, fresh environment, outside a VPC): p50 $(pct 0.5 "${C[@]}") ms, p99 $(pct 0.99 "${C[@]}") ms over ${#C[@]} (goal < 20 ms)"
echo "warm, function URL: p50 $fp50 ms (spread $(spread "${FP50[@]}")), p99 $(median "${FP99[@]}") ms, $fr req/s (spread $(spread "${FR[@]}"))"
echo "warm, direct:       p50 $dp50 ms (spread $(spread "${DP50[@]}")), p99 $(median "${DP99[@]}") ms, $dr req/s (spread $(spread "${DR[@]}"))"
awk -v a="$fp50" -v b="$dp50" -v x="$fr" -v y="$dr" 'BEGIN {
  printf "warm overhead over the direct call: %.3f ms at p50 (goal < 0.5 ms); throughput ratio function/direct: %.2f\n", a - b, x / y }'
declare -a VC
for i in $(seq 0 $((COLD - 1))); do
  # shellcheck disable=SC2046
  t=$(curl -s --noproxy '*' -o /dev/null -w '%{time_total}' $(url "vpc$i"))
  VC+=("$(awk -v t="$t" 'BEGIN { printf "%.3f", t * 1000 }')")
done
echo "cold start in a VPC (an endpoint attached first): p50 $(pct 0.5 "${VC[@]}") ms, p99 $(pct 0.99 "${VC[@]}") ms over ${#VC[@]}"
echo "memory: $MEMORY MB a function"
