#!/usr/bin/env bash
# Metrics store: ingestion rate and bytes per sample on disk, beside Prometheus building
# blocks from the same samples in the same run, and the time of a 24-hour query of one
# series. The samples: 500 series (gauges that wander, counters that grow) every 10 s over
# 24 hours: 4.3 million samples.
#
#   bench/metrics.sh     (installs prometheus for promtool if missing; builds veeps)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
cargo build --release --locked -p veeps >/dev/null 2>&1
BIN=$PWD/target/release/veeps
WORK=$(mktemp -d /tmp/veeps-bench-metrics.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
SERIES=500 HOURS=24

# The same samples in two forms: JSON batches for veeps' API, OpenMetrics for promtool.
python3 - "$WORK" "$SERIES" "$HOURS" <<'PY'
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
        open(f"{work}/batch{batches:05}.json", "w").write(json.dumps({"samples": batch}))
        batches += 1
        batch = []
if batch:
    open(f"{work}/batch{batches:05}.json", "w").write(json.dumps({"samples": batch}))
for i in range(series // 2):
    for t, v in rows_g[i]:
        om.write(f'bench_gauge{{series="{i}"}} {v} {t}\n')
for j in range(series // 2, series):
    for t, v in rows_c[j]:
        om.write(f'bench_counter_total{{series="{j}"}} {v} {t}\n')
om.write("# EOF\n")
open(f"{work}/count", "w").write(str(n))
PY
SAMPLES=$(cat "$WORK/count")

export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$PORT VEEPS_OBS_MAINTAIN_SECS=2
"$BIN" server --listen "127.0.0.1:$PORT" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
TOKEN=$(cat "$WORK/data/root.token")
s=$(date +%s%N)
for f in "$WORK"/batch*.json; do
  curl -s --noproxy '*' -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' --data-binary "@$f" "http://127.0.0.1:$PORT/v1/envs/bench/metrics"
done
ingest_ms=$((($(date +%s%N) - s) / 1000000))
# The head is written as blocks by the maintenance loop; wait for the log to empty.
for _ in $(seq 60); do [ "$(stat -c %s "$WORK/data/metrics/wal")" -lt 1000 ] && break; sleep 1; done
veeps_bytes=$(du -sb "$WORK/data/metrics/blocks" | cut -f1)
s=$(date +%s%N)
for _ in $(seq 20); do
  curl -s --noproxy '*' -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/envs/bench/metrics/query?q=bench_gauge%7Bseries%3D%227%22%7D&since=24h&period=300&stat=p90"
done
query_ms=$((($(date +%s%N) - s) / 20000000))

s=$(date +%s%N)
promtool tsdb create-blocks-from openmetrics "$WORK/data.om" "$WORK/prom" >/dev/null 2>&1
prom_ms=$((($(date +%s%N) - s) / 1000000))
prom_bytes=$(du -sb "$WORK/prom" | cut -f1)

python3 - "$SAMPLES" "$ingest_ms" "$veeps_bytes" "$prom_ms" "$prom_bytes" "$query_ms" <<'PY'
import sys
n, ims, vb, pms, pb, q = map(int, sys.argv[1:])
print(f"samples:                       {n:,}")
print(f"ingestion:   veeps {n / ims * 1000:,.0f} samples/s (HTTP JSON API)   promtool {n / pms * 1000:,.0f} samples/s (offline import)")
print(f"on disk:     veeps {vb / n:.3f} B/sample   Prometheus {pb / n:.3f} B/sample   ratio {vb / pb:.2f} (goal < 1)")
print(f"query, 24 h of one series (p90 per 5 min, over HTTP): {q} ms (goal < 50 ms)")
PY
