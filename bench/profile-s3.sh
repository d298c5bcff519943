#!/usr/bin/env bash
# Where a 4 KiB presigned GET spends its instructions: the S3 server under callgrind
# (instruction counts, steadier on a busy machine than requests per second), a release
# build with line tables in its own target directory, wrk for SECONDS, then the functions
# by inclusive cost. Not a benchmark: valgrind runs the server ~50 times slower, and its
# CPU has no SHA extensions, so SHA-256 runs the portable code: the signature's share is
# several times what it is on this machine's CPU (use `perf record` for shares of time).
#
#   bench/profile-s3.sh [SECONDS]   (installs valgrind, wrk and awscli if missing)
#   VEEPS_BIN=/path/to/veeps ...    that build instead of building one
#   ALLOC=1 bench/profile-s3.sh     heap allocations a GET instead (valgrind's dhat; the
#                                   sites each GET passes, from the most frequent)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-15}
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v wrk >/dev/null || missing+=(wrk)
command -v aws >/dev/null || missing+=(awscli)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN   # a build made as below (line tables), or any other
else
  TARGET=${PROFILE_TARGET_DIR:-/tmp/veeps-profile-target}
  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$TARGET \
    cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$TARGET/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-profile.XXXXXX)
API=$((20000 + RANDOM % 10000)); S3=$((API + 1))
cleanup() {
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data
if [ -n "${ALLOC:-}" ]; then
  TOOL=(--tool=dhat --dhat-out-file="$WORK/dhat.json")
else
  TOOL=(--tool=callgrind --callgrind-out-file="$WORK/cg.out" --dump-instr=no --instr-atstart=no)
fi
valgrind "${TOOL[@]}" \
  "$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$S3" --s3-website-listen "127.0.0.1:$((API + 2))" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 600); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.2; done
. bench/s3-credentials.sh
s3_credentials "$API" "$WORK/data"
aws --endpoint-url "http://127.0.0.1:$S3" s3 mb s3://bench >/dev/null
head -c 4096 /dev/urandom >"$WORK/4k"
aws --endpoint-url "http://127.0.0.1:$S3" s3 cp "$WORK/4k" s3://bench/4k >/dev/null
URL=$(python3 - "$S3" <<'PY'
import os, sys, botocore.session
from botocore.config import Config
# SigV4 as bench/s3.sh signs (SIGV2=1: botocore's own default, as figures before 2026-12-02).
sig = Config(signature_version="s3" if os.environ.get("SIGV2") else "s3v4")
c = botocore.session.get_session().create_client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", config=sig)
print(c.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": "4k"}, ExpiresIn=3600))
PY
)
if [ -n "${ALLOC:-}" ]; then
  N=$(wrk -t1 -c4 -d"${DUR}s" "$URL" | awk '/requests in/ {print $1}')
  kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null || true
  SERVER=
  python3 - "$WORK/dhat.json" "$N" <<'PY'
import collections, json, re, sys
d, n = json.load(open(sys.argv[1])), int(sys.argv[2])
# Sites that every GET passes (at least 3 times in 10 requests); start-up and the background
# allocate far less often.
per = [p for p in d["pps"] if p["tbk"] >= 0.3 * n]
print(f"{n} GETs: {sum(p['tbk'] for p in per) / n:.1f} allocations a GET")
by = collections.Counter()
for p in per:
    frames = [re.sub(r"^0x[0-9A-F]+: ", "", d["ftbl"][i]) for i in p["fs"]]
    mine = [f for f in frames if "veeps" in f] or frames[3:4]
    by[mine[0][:110]] += p["tbk"] / n
for site, k in by.most_common(25):
    print(f"{k:6.2f}  {site}")
PY
  exit 0
fi
callgrind_control -i on "$SERVER" >/dev/null 2>&1
N=$(wrk -t1 -c4 -d"${DUR}s" "$URL" | awk '/requests in/ {print $1}')
callgrind_control -i off "$SERVER" >/dev/null 2>&1
callgrind_control -d "$SERVER" >/dev/null 2>&1
sleep 1
TOTAL=$(callgrind_annotate "$WORK/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$N GETs, $TOTAL instructions: $((TOTAL / N)) a GET"
callgrind_annotate --inclusive=yes "$WORK/cg.out.1" 2>/dev/null | grep -E 'veeps|s3s|serde|ring|malloc|mem(set|cpy)' | head -40 | cut -c1-160 || true
echo "(the whole profile: callgrind_annotate $WORK/cg.out.1)"
