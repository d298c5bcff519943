#!/usr/bin/env bash
# Metrics store: bytes per sample on disk beside Prometheus building blocks from the same
# samples in the same run, on two sets:
#  - "recorded": an hour of this machine's own series as veeps collected them with the
#    bundled example up and lightly loaded (host, instances, groups, balancers, databases,
#    functions, the API; bench/metrics-record.sh made bench/data/metrics-hour.om.gz),
#    replayed as one block, as veeps would write that hour;
#  - "random walk": 500 series (gauges that wander, counters that grow) every 10 s over
#    24 hours: 4.3 million samples of high entropy.
# Also the ingestion rate and the time of a 24-hour query of one series.
#
#   bench/metrics.sh     (installs prometheus for promtool if missing; builds veeps)
#   VEEPS_BIN=/path/to/veeps bench/metrics.sh   (measure that binary, e.g. an older build)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
else
  cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-bench-metrics.XXXXXX)
mkdir -p "$WORK/walk" "$WORK/rec"
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
SERIES=500 HOURS=24

# The same samples in two forms: JSON batches for veeps' API, OpenMetrics for promtool.
python3 - "$WORK/walk" "$SERIES" "$HOURS" <<'PY'
import json, math, random, sys, time
work, series, hours = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
end = (int(time.time()) // 10) * 10 - 60
start = end - hours * 3600
steps = range(start, end, 10)
om = open(f"{work}/data.om", "w")
batches, batch, n = 0, [], 0
state = [random.uniform(10, 90) for _ in range(series)]
counters = [0.0] * series
om.write("# TYPE bench_gauge gauge\n# TYPE bench_counter counter\n")
rows_g, rows_c = [[] for _ in range(series)], [[] for _ in range(series)]
for t in steps:
    for i in range(series // 2):
        state[i] = min(100, max(0, state[i] + random.gauss(0, 0.5)))
        v = round(state[i], 2)
        rows_g[i].append((t, v))
        batch.append({"name": "bench_gauge", "labels": {"series": str(i)}, "value": v, "ts": t * 1000})
        j = i + series // 2
        counters[j] += random.randint(0, 50)
        rows_c[j].append((t, counters[j]))
        batch.append({"name": "bench_counter_total", "labels": {"series": str(j)}, "value": counters[j], "ts": t * 1000})
        n += 2
    if len(batch) >= 50000:
        open(f"{work}/batch-bench-{batches:05}.json", "w").write(json.dumps({"samples": batch}))
        batches += 1
        batch = []
if batch:
    open(f"{work}/batch-bench-{batches:05}.json", "w").write(json.dumps({"samples": batch}))
for i in range(series // 2):
    for t, v in rows_g[i]:
        om.write(f'bench_gauge{{series="{i}"}} {v} {t}\n')
for j in range(series // 2, series):
    for t, v in rows_c[j]:
        om.write(f'bench_counter_total{{series="{j}"}} {v} {t}\n')
om.write("# EOF\n")
open(f"{work}/count", "w").write(str(n))
PY


# The recorded hour, moved to start just after a 2-hour boundary at least 4 hours ago (one
# Prometheus block, and old enough for veeps to write its block at once); samples posted
# per environment, as each environment's own series.
python3 - "$WORK/rec" bench/data/metrics-hour.om.gz <<'PY'
import collections, gzip, json, re, sys, time
work, src = sys.argv[1], sys.argv[2]
rows = []
for line in gzip.open(src, "rt"):
    if line.startswith("#") or not line.strip():
        continue
    key, v, ts = line.rsplit(" ", 2)
    rows.append((key, float(v), int(ts)))
first = min(r[2] for r in rows)
base = (int(time.time()) - 6 * 3600) // 7200 * 7200 + 60
shift = base - first
om = open(f"{work}/data.om", "w")
per_env = collections.defaultdict(list)
for key, v, ts in rows:
    ts += shift
    om.write(f"{key} {v!r} {ts}\n")
    name, _, rest = key.partition("{")
    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
    env = labels.pop("env", "system")
    per_env[env].append({"name": name, "labels": labels, "value": v, "ts": ts * 1000})
om.write("# EOF\n")
for env, samples in per_env.items():
    for i in range(0, len(samples), 50000):
        open(f"{work}/batch-{env}-{i // 50000:05}.json", "w").write(json.dumps({"samples": samples[i:i + 50000]}))
open(f"{work}/count", "w").write(str(len(rows)))
open(f"{work}/series", "w").write(str(len({r[0] for r in rows})))
PY

# Bytes of the files under a directory (directories themselves not counted, for either).
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

# measure SET: veeps (a server of its own) and promtool on one set; prints a line of
# name=value pairs for the report.
measure() {
  local set=$1 dir=$WORK/$1 port=$((PORT + ${#1}))
  local n; n=$(cat "$dir/count")
  VEEPS_DATA_DIR=$dir/data VEEPS_ADDR=http://127.0.0.1:$port VEEPS_OBS_MAINTAIN_SECS=2 \
    "$BIN" server --listen "127.0.0.1:$port" 2>"$dir/server.log" &
  SERVER=$!
  for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
  local token; token=$(cat "$dir/data/root.token")
  local s; s=$(date +%s%N)
  for f in "$dir"/batch-*.json; do
    local env; env=$(basename "$f" | cut -d- -f2)
    curl -s --noproxy '*' -o /dev/null -H "Authorization: Bearer $token" -H 'content-type: application/json' --data-binary "@$f" "http://127.0.0.1:$port/v1/envs/$env/metrics"
  done
  local ingest_ms=$((($(date +%s%N) - s) / 1000000))
  # The head is written as a block by the maintenance loop; wait for the log to empty.
  for _ in $(seq 60); do [ "$(stat -c %s "$dir/data/metrics/wal")" -lt 1000 ] && break; sleep 1; done
  local veeps_bytes; veeps_bytes=$(file_bytes "$dir/data/metrics/blocks")
  local query_ms=0
  if [ "$set" = walk ]; then
    s=$(date +%s%N)
    for _ in $(seq 20); do
      curl -s --noproxy '*' -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/envs/bench/metrics/query?q=bench_gauge%7Bseries%3D%227%22%7D&since=24h&period=300&stat=p90"
    done
    query_ms=$((($(date +%s%N) - s) / 20000000))
  fi
  kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; SERVER=
  s=$(date +%s%N)
  promtool tsdb create-blocks-from openmetrics "$dir/data.om" "$dir/prom" >"$dir/promtool.log" 2>&1
  local prom_ms=$((($(date +%s%N) - s) / 1000000))
  local prom_bytes; prom_bytes=$(file_bytes "$dir/prom")
  echo "$n $ingest_ms $veeps_bytes $prom_ms $prom_bytes $query_ms $(cat "$dir/series" 2>/dev/null || echo "$SERIES")"
}

measure rec >"$WORK/rec.out"
measure walk >"$WORK/walk.out"
python3 - "$(cat "$WORK/rec.out")" "$(cat "$WORK/walk.out")" <<'PY'
import sys
for title, line in (("recorded hour of this machine's series", sys.argv[1]), ("random walk, 24 h", sys.argv[2])):
    n, ims, vb, pms, pb, q, series = map(int, line.split())
    print(f"{title}: {series} series, {n:,} samples")
    print(f"  on disk:     veeps {vb / n:.3f} B/sample   Prometheus {pb / n:.3f} B/sample   ratio {vb / pb:.2f} (goal < 1)")
    print(f"  ingestion:   veeps {n / ims * 1000:,.0f} samples/s (HTTP JSON API)   promtool {n / pms * 1000:,.0f} samples/s (offline import)")
    if q:
        print(f"  query, 24 h of one series (p90 per 5 min, over HTTP): {q} ms (goal < 50 ms)")
PY
