#!/usr/bin/env bash
# Records a running veeps' own series (host, instances, balancers, databases, functions)
# from its Prometheus exposition every 10 s, for bench/metrics.sh to replay. Meanwhile a
# light, uneven load (HTTP requests through the example's balancers, some reaching its
# databases) keeps the series moving as a used deployment's would.
#
#   ./run up &                                 (the bundled example)
#   bench/metrics-record.sh [SECONDS] [OUT]    (default 3600 s, bench/data/metrics-hour.om.gz)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3600}
OUT=${2:-bench/data/metrics-hour.om.gz}
ADDR=${VEEPS_ADDR:-http://127.0.0.1:7480}
DATA=${VEEPS_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/veeps}
TOKEN=$(cat "$DATA/root.token")
URLS=${LOAD_URLS:-https://127.0.0.1:9443/sample-app-frontend https://127.0.0.1:8443/sample-app-frontend https://127.0.0.1:9443/sample-app-frontend/service/db}
load() {
  while :; do
    for u in $URLS; do curl -sk --noproxy '*' -o /dev/null --max-time 5 "$u" || true; done
    sleep "0.$((RANDOM % 10))"
  done
}
load &
LOAD=$!
trap 'kill $LOAD 2>/dev/null' EXIT
python3 - "$ADDR" "$TOKEN" "$SECS" "$OUT" <<'PY'
import gzip, sys, time, urllib.request
addr, token, secs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
series, types = {}, {}
# The exposition also holds the last value of series no longer collected (an earlier run's):
# only samples taken during the recording count.
start = time.time() - 10
end = time.time() + secs
while time.time() < end:
    req = urllib.request.Request(f"{addr}/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        body = urllib.request.urlopen(req, timeout=5).read().decode()
    except Exception as e:
        print("scrape failed:", e, file=sys.stderr)
        time.sleep(10)
        continue
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        key, value, ts = line.rsplit(" ", 2)
        if int(ts) / 1000 < start:
            continue
        pts = series.setdefault(key, {})
        pts[int(ts) // 1000] = value
    time.sleep(10)
with gzip.open(out, "wt") as f:
    for name, kind in sorted(types.items()):
        f.write(f"# TYPE {name} {kind}\n")
    # OpenMetrics wants each metric family's samples together.
    for key in sorted(series, key=lambda k: (k.split("{")[0], k)):
        for ts, v in sorted(series[key].items()):
            f.write(f"{key} {v} {ts}\n")
    f.write("# EOF\n")
n = sum(len(p) for p in series.values())
print(f"{len(series)} series, {n} samples -> {out}")
PY
