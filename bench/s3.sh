#!/usr/bin/env bash
# S3 throughput with wrk over presigned URLs (so every request is SigV4-checked), for
# 4 KiB, 1 MiB and 64 MiB objects: GET beside nginx serving the same bytes from disk, PUT
# beside the disk's own write bandwidth (dd with fsync), in one run; prints the ratios.
# Each measurement runs ROUNDS times (3 by default), veeps and nginx interleaved; the
# table shows medians, the spread (min-max) and the ratio of the medians.
#
#   bench/s3.sh [SECONDS] [CONNECTIONS]   (installs nginx, wrk and awscli if missing)
#   ROUNDS=5 VEEPS_BIN=/path/to/veeps bench/s3.sh   (more rounds; another binary)
#   SIGV2=1 bench/s3.sh   presigned URLs signed SigV2 (botocore's own default; figures
#                         before 2026-12-02 were measured that way)
#   SIZES=4k bench/s3.sh  only these sizes (of 4k, 1m, 64m)
#
# Beside the rates, each server's CPU time a GET (its own and the kernel's on its behalf,
# from /proc: the veeps server, nginx's workers), steadier than rates on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${2:-16}
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v aws >/dev/null || missing+=(awscli)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import botocore' 2>/dev/null || { echo "bench/s3.sh needs botocore (pip install botocore, or the awscli package)" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-4k 1m 64m}
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
else
  cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-bench-s3.XXXXXX)
API=$((20000 + RANDOM % 10000)); S3=$((API + 1)); NG=$((API + 2))
cleanup() {
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data
"$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$S3" --s3-website-listen "127.0.0.1:$((API + 3))" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.05; done
. bench/s3-credentials.sh
s3_credentials "$API" "$WORK/data"
aws --endpoint-url "http://127.0.0.1:$S3" s3 mb s3://bench >/dev/null

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www"   # nginx's workers run unprivileged
for s in 4k 1m 64m; do
  case $s in 4k) n=4096;; 1m) n=1048576;; 64m) n=67108864;; esac
  head -c "$n" /dev/urandom >"$WORK/www/$s"
  chmod 644 "$WORK/www/$s"
  aws --endpoint-url "http://127.0.0.1:$S3" s3 cp "$WORK/www/$s" "s3://bench/$s" >/dev/null
done
cat >"$WORK/nginx.conf" <<NGX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$NG; root $WORK/www; } }
NGX
nginx -c "$WORK/nginx.conf"

# Presigned URLs (valid an hour): GET per size, and PUT for a lua script.
python3 - "$S3" "$WORK" <<'PY'
import os, sys, botocore.session
from botocore.config import Config
port, work = sys.argv[1], sys.argv[2]
# SigV4, as the AWS CLI's presign and current SDKs sign (botocore alone would sign SigV2).
sig = Config(signature_version="s3" if os.environ.get("SIGV2") else "s3v4")
c = botocore.session.get_session().create_client("s3", endpoint_url=f"http://127.0.0.1:{port}", config=sig)
for s in ["4k", "1m", "64m"]:
    open(f"{work}/get-{s}", "w").write(c.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": s}, ExpiresIn=3600))
    open(f"{work}/put-{s}", "w").write(c.generate_presigned_url("put_object", Params={"Bucket": "bench", "Key": f"put-{s}"}, ExpiresIn=3600))
PY

HZ=$(getconf CLK_TCK)
for _ in $(seq 50); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
P_NGINX=$(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')
cpu() { # PIDS -> "user system" clock ticks so far (every thread of each)
  for p in $1; do [ -r "/proc/$p/stat" ] && awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$p/stat"; done \
    | awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
rate() { # URL PIDS [lua] -> "req/s user_us system_us" (CPU of PIDS a request)
  local extra=() u0 s0 u1 s1 out
  [ -n "${3:-}" ] && extra=(-s "$3")
  read -r u0 s0 < <(cpu "$2")
  out=$(wrk -t2 -c"$CONNS" -d"${DUR}s" "${extra[@]}" "$1" 2>/dev/null)
  read -r u1 s1 < <(cpu "$2")
  echo "$out" | python3 -c '
import re, sys
t = sys.stdin.read()
du, ds, hz = (float(x) for x in sys.argv[1:4])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
n = float(re.search(r"(\d+) requests in", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs:
    sys.exit(f"{errs.group(1)} requests failed")
print(f"{rps:.0f} {du / hz * 1e6 / n:.2f} {ds / hz * 1e6 / n:.2f}")' "$((u1 - u0))" "$((s1 - s0))" "$HZ"
}
for s in 4k 1m 64m; do
  cat >"$WORK/put-$s.lua" <<LUA
wrk.method = "PUT"
local f = io.open("$WORK/www/$s", "rb")
wrk.body = f:read("*a")
f:close()
LUA
done
# Interleaved rounds; each line of $WORK/results is "series size value [user_us sys_us]".
for r in $(seq "$ROUNDS"); do
  for s in $SIZES; do
    case $s in 4k) n=4096;; 1m) n=1048576;; 64m) n=67108864;; esac
    echo "veeps-get $s $(rate "$(cat "$WORK/get-$s")" "$SERVER")" >>"$WORK/results"
    echo "nginx-get $s $(rate "http://127.0.0.1:$NG/$s" "$P_NGINX")" >>"$WORK/results"
    echo "veeps-put $s $(rate "$(cat "$WORK/put-$s")" "$SERVER" "$WORK/put-$s.lua")" >>"$WORK/results"
    # The disk: the same bytes written and synced, as many times, in one stream (MiB/s).
    count=$(( (256 * 1048576) / n )); [ "$count" -gt 64 ] && count=64
    start=$(date +%s%N)
    dd if="$WORK/www/$s" of="$WORK/ddout" bs="$n" count=1 conv=fsync status=none
    for _ in $(seq 2 "$count"); do dd if="$WORK/www/$s" of="$WORK/ddout" bs="$n" count=1 oflag=append conv=notrunc,fsync status=none; done
    el=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "disk $s $(python3 -c "print($count * $n / 2**20 / max($el / 1000, 1e-3))")" >>"$WORK/results"
  done
  echo "round $r of $ROUNDS done" >&2
done
python3 - "$WORK/results" "$ROUNDS" "$SIZES" <<'PY'
import statistics, sys
path, rounds, sizes = sys.argv[1], sys.argv[2], sys.argv[3].split()
runs, cpu = {}, {}
for line in open(path):
    name, size, v, *uk = line.split()
    runs.setdefault((name, size), []).append(float(v))
    if uk:
        cpu.setdefault((name, size), []).append((float(uk[0]), float(uk[1])))
size_bytes = {"4k": 4096, "1m": 1 << 20, "64m": 64 << 20}
def cell(name, size, scale=1.0):
    v = [x * scale for x in runs[(name, size)]]
    return statistics.median(v), f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]"
print(f"{rounds} interleaved rounds: median [min-max]")
print(f"{'size':<5} {'veeps GET/s':>22} {'nginx GET/s':>22} {'ratio':>6} | "
      f"{'veeps PUT MiB/s':>20} {'disk MiB/s':>20} {'ratio':>6}")
for s in sizes:
    vg, vgs = cell("veeps-get", s)
    ng, ngs = cell("nginx-get", s)
    vp, vps = cell("veeps-put", s, size_bytes[s] / 2**20)
    dk, dks = cell("disk", s)
    print(f"{s:<5} {vgs:>22} {ngs:>22} {vg / max(ng, 1):6.2f} | {vps:>20} {dks:>20} {vp / max(dk, 1e-9):6.2f}")
print("CPU a GET (median, microseconds): own + kernel")
for s in sizes:
    row = []
    for name in ("veeps-get", "nginx-get"):
        u = statistics.median(c[0] for c in cpu[(name, s)])
        k = statistics.median(c[1] for c in cpu[(name, s)])
        row.append(f"{name.split('-')[0]} {u:.1f} + {k:.1f} = {u + k:.1f}")
    print(f"{s:<5} " + "   ".join(row))
PY
