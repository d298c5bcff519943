#!/usr/bin/env bash
# What anonymous and unauthenticated callers cost the server: its memory (RSS) after
# N anonymous S3 requests to random bucket names, and the growth of the state store and
# the audit log per 1,000 API calls with a wrong token. Goals: flat memory, bounded audit.
#
#   bench/hostile.sh [N]   (default 10000; VEEPS_BIN=path uses that binary unbuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
if [ -z "${VEEPS_BIN:-}" ]; then
  cargo build --release --locked -p veeps >/dev/null 2>&1
fi
BIN=${VEEPS_BIN:-$PWD/target/release/veeps}
WORK=$(mktemp -d /tmp/veeps-bench-hostile.XXXXXX)
API=$((20000 + RANDOM % 10000)); S3=$((API + 1)); WEB=$((API + 2))
cleanup() {
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$API VEEPS_OBS_INTERVAL_SECS=1
"$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$S3" --s3-website-listen "127.0.0.1:$WEB" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$API/v1/status" && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
series() { "$BIN" metrics list s3 2>/dev/null | grep -c . || true; }
sleep 3
echo "server RSS at start: $(rss) KiB; s3 series: $(series)"
python3 - "$S3" "$N" <<'PY'
import http.client, os, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    path = "/" + os.urandom(8).hex() + "/" + os.urandom(4).hex()
    try:
        c.request("GET", path)
        c.getresponse().read()
    except Exception:
        c = http.client.HTTPConnection("127.0.0.1", port)
PY
sleep 3
echo "after $N anonymous requests to random buckets: RSS $(rss) KiB; s3 series: $(series)"
size() { stat -c %s "$WORK/data/state.redb"; }
entries() { "$BIN" audit --verify --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["entries"])'; }
before=$(size); e0=$(entries)
python3 - "$API" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(1000):
    c.request("GET", "/v1/envs/" + "x" * 2000 + str(i), headers={"Authorization": "Bearer wrong"})
    c.getresponse().read()
PY
sleep 2
e1=$(entries)
echo "per 1,000 refused API calls: state.redb $before -> $(size) bytes, audit entries +$((e1 - e0 - 1)) (the rest counted in api_audit_dropped_total)"
