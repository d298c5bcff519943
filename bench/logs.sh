#!/usr/bin/env bash
# Log store: ingestion rate through the API, then searches over about 1 GiB of logs
# (24 hours of four groups' lines), each beside GNU grep over the same store files in the
# same run: a rare substring over the whole day, and the newest 1,000 lines of one group.
#
#   bench/logs.sh [MIB]     (default 1024; builds veeps)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
cargo build --release --locked -p veeps >/dev/null 2>&1
BIN=$PWD/target/release/veeps
WORK=$(mktemp -d /tmp/veeps-bench-logs.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$PORT
"$BIN" server --listen "127.0.0.1:$PORT" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
TOKEN=$(cat "$WORK/data/root.token")

# Lines like an access log; one in 50,000 carries the needle. Batches are generated and
# posted one at a time, so the generator's time is not counted as ingestion.
python3 - "$WORK" "$MIB" "$PORT" "$TOKEN" <<'PY'
import json, random, sys, time, urllib.request
work, mib, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
random.seed(11)
now = int(time.time() * 1000)
start = now - 24 * 3600 * 1000
target = mib * 1024 * 1024
groups = ["frontend", "backend", "alb-public", "db"]
paths = ["/", "/health", "/service/db", "/static/app.js", "/api/v1/items", "/login"]
total_bytes, lines, posting = 0, 0, 0.0
per_batch = 100_000
est_lines = target // 150
step = (now - start) / max(est_lines, 1)
ts = float(start)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while total_bytes < target:
    batch = []
    for _ in range(per_batch):
        ts += step
        g = groups[lines % 4]
        text = (f'10.0.{random.randint(0,255)}.{random.randint(1,254)} - - '
                f'"{random.choice(["GET","POST"])} {random.choice(paths)}?id={random.randint(0,10**9)} HTTP/1.1" '
                f'{random.choice([200,200,200,304,404,500])} {random.randint(100,90000)} '
                f'"Mozilla/5.0 (X11; Linux x86_64)" rt={random.random():.4f}')
        if lines % 50_000 == 7:
            text += " trace=needle-7f3a9c"
        batch.append({"group": g, "source": f"i-{lines % 7}", "stream": "stdout", "text": text, "ts": int(ts)})
        total_bytes += len(text) + 40
        lines += 1
    body = json.dumps({"lines": batch}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/envs/bench/logs", data=body,
                                 headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
    s = time.time()
    opener.open(req).read()
    posting += time.time() - s
open(f"{work}/ingest", "w").write(f"{lines} {posting:.3f}\n")
PY
read -r LINES POST_S < "$WORK/ingest"
STORE=$WORK/data/logs
# Make sure the writer's buffers are on disk before grep reads the files.
"$BIN" logs bench frontend --since 1m --limit 1 >/dev/null
BYTES=$(du -sb "$STORE" | cut -f1)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

t() { local s; s=$(date +%s%N); "$@" >"$WORK/out" 2>&1; echo $((($(date +%s%N) - s) / 1000000)); }
# Warm the page cache the same way for both tools.
cat "$STORE"/bench/*/*.log >/dev/null
v_grep=$(t "$BIN" logs bench --since 25h --grep needle-7f3a9c --limit 100000 --json)
v_hits=$(grep -c needle-7f3a9c "$WORK/out" || true)
g_grep=$(t grep -rF needle-7f3a9c "$STORE/bench")
g_hits=$(wc -l <"$WORK/out")
v_tail=$(t "$BIN" logs bench backend --since 25h --limit 1000 --json)
g_tail=$(t sh -c "cat $(ls "$STORE"/bench/backend/*.log | sort -t/ -k1 | tr '\n' ' ') | tail -n 1000")

python3 - "$LINES" "$POST_S" "$BYTES" "$v_grep" "$v_hits" "$g_grep" "$g_hits" "$v_tail" "$g_tail" <<'PY'
import sys
lines, post_s, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
vg, vh, gg, gh, vt, gt = map(int, sys.argv[4:])
print(f"lines:                 {lines:,} ({size / 2**30:.2f} GiB in the store)")
print(f"ingestion (HTTP JSON): {lines / post_s:,.0f} lines/s, {size / post_s / 2**20:,.0f} MiB/s")
print(f"substring, whole day:  veeps {vg} ms ({vh} lines)   grep -rF {gg} ms ({gh} lines)   ratio {vg / max(gg, 1):.2f} (goal: about a second)")
print(f"newest 1,000 of group: veeps {vt} ms   cat | tail {gt} ms   ratio {vt / max(gt, 1):.2f}")
PY
