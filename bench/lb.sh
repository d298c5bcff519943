#!/usr/bin/env bash
# Load balancer throughput and p99 latency with wrk, in one run: a backend (nginx returning
# a small answer) measured directly, through a veeps load balancer, through nginx as an
# equivalent reverse proxy (keep-alive upstream, two workers as veeps has two threads),
# and through HAProxy (two threads, `http-reuse always`), for HTTP and for HTTPS. Prints
# ratios veeps/nginx, veeps/HAProxy and veeps/direct. Needs root. Both proxies run in the
# balancer's own network namespace and all three are reached at the balancer's address,
# so all pay the same path: host -> VPC router -> balancer -> back to the backend on the
# host. Each side runs ROUNDS times (3 by default), interleaved
# (nginx, veeps, nginx, veeps...), so that a slow minute of a shared machine hits both; it
# prints medians with the spread (min-max) and the ratio of the medians, and each proxy's
# CPU time a request (its own and the kernel's, from /proc), steadier than rates on a busy
# machine.
#
#   bench/lb.sh [SECONDS] [CONNECTIONS]     (installs nginx, haproxy and wrk if missing;
#                                            builds veeps)
#   ROUNDS=5 bench/lb.sh                    (more rounds)
#   VEEPS_BIN=/path/to/veeps bench/lb.sh    (measure that binary, e.g. an older build)
#   LOGS=1 bench/lb.sh                      (every proxy writes access logs)
#   HOLD=1 bench/lb.sh                      (set up, print the URLs and each proxy's pid,
#                                            and wait until interrupted: for perf)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${2:-64}
[ "$(id -u)" = 0 ] || { echo "bench/lb.sh needs root" >&2; exit 1; }
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
ROUNDS=${ROUNDS:-3}
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
else
  cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-bench-lb.XXXXXX)
API=$((20000 + RANDOM % 10000))
BACK=$((API + 1)); NG=$((API + 2)); NGS=$((API + 3)); VP=$((API + 4)); VPS=$((API + 5))
HA=$((API + 6)); HAS=$((API + 7))
cleanup() {
  [ -n "${SERVER:-}" ] && "$BIN" destroy "$WORK/env" --auto-approve >/dev/null 2>&1
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  for c in backend proxy haproxy; do [ -f "$WORK/$c.pid" ] && kill $(cat "$WORK/$c.pid") 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The balancer reaches the host through its VPC's uplink: the host's address there.
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$API
(cd "$WORK" && exec "$BIN" server --listen "127.0.0.1:$API" 2>"$WORK/server.log") &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.05; done
mkdir -p "$WORK/env"
cat >"$WORK/env/main.hcl" <<HCL
resource "vpc" "v" {
  name       = "bench"
  cidr_block = "10.98.0.0/18"
}
resource "subnet" "pub" {
  vpc_id     = vpc.v.id
  cidr_block = "10.98.0.0/24"
  tier       = "public"
}
resource "security_group" "lb" {
  vpc_id = vpc.v.id
  ingress {
    protocol    = "tcp"
    from_port   = 80
    to_port     = 65535
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
HOSTIP=$(ip -o route get 10.98.0.4 | sed -n 's/.* src \([0-9.]*\).*/\1/p')

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
# LOGS=1: each proxy writes an access log line a request (veeps to its spool, nginx to a
# buffered file, HAProxy into an in-memory ring: it has no file logging of its own).
if [ -n "${LOGS:-}" ]; then
  VEEPS_LOG=true
  NGINX_LOG="access_log $WORK/proxy-access.log combined buffer=64k flush=1s;"
  HAP_RING=$'ring logs\n  size 1048576\n  format rfc3164'
  HAP_LOG=$'  log ring@logs local0\n  option httplog'
else
  VEEPS_LOG=false
  NGINX_LOG="access_log off;"
  HAP_RING=""
  HAP_LOG=""
fi
cat >"$WORK/backend.conf" <<NGX
worker_processes 1;
pid $WORK/backend.pid;
error_log $WORK/backend.err;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen $BACK reuseport backlog=4096;
    keepalive_requests 1000000;
    location / { return 200 "hello from the backend\n"; }
  }
}
NGX
cat >"$WORK/proxy.conf" <<NGX
worker_processes 2;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err;
events { worker_connections 4096; }
http {
  $NGINX_LOG
  upstream backend { server $HOSTIP:$BACK; keepalive 256; }
  server {
    listen $NG backlog=4096;
    listen $NGS ssl http2 backlog=4096;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGX
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/bundle.pem"
cat >"$WORK/haproxy.cfg" <<HAP
$HAP_RING
global
  nbthread 2
  maxconn 8192
  pidfile $WORK/haproxy.pid
  daemon
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend f
  bind :$HA backlog 4096
  bind :$HAS ssl crt $WORK/bundle.pem alpn h2,http/1.1 backlog 4096
  option forwardfor
$HAP_LOG
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  default_backend b
backend b
  server s1 $HOSTIP:$BACK
HAP
nginx -c "$WORK/backend.conf"

cat >>"$WORK/env/main.hcl" <<HCL
resource "certificate" "bench" {
  domain_name               = "bench.test"
  subject_alternative_names = ["127.0.0.1"]
}
resource "target_group" "backend" {
  name = "backend"
  port = $BACK
  health_check {
    interval          = 1
    timeout           = 0.5
    healthy_threshold = 1
  }
}
resource "target_group_attachment" "backend" {
  target_group_arn = target_group.backend.arn
  target_id        = "$HOSTIP"
}
resource "load_balancer" "bench" {
  name            = "bench"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
  access_logs     = $VEEPS_LOG
}
resource "listener" "http" {
  load_balancer_arn = load_balancer.bench.arn
  port              = 80
  host_port         = $VP
  default_action {
    type             = "forward"
    target_group_arn = target_group.backend.arn
  }
}
resource "listener" "https" {
  load_balancer_arn = load_balancer.bench.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = certificate.bench.arn
  host_port         = $VPS
  default_action {
    type             = "forward"
    target_group_arn = target_group.backend.arn
  }
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
LB=$("$BIN" state show env load_balancer.bench | sed -n 's/.*dns_name *= *"\(.*\)".*/\1/p')
# The balancer's namespace: this server's prefix (from its data directory), holding $LB.
PREFIX=v$(printf %s "$WORK/data" | sha256sum | cut -c1-5)
NS=$(ip netns | awk '{print $1}' | grep "^$PREFIX-" | while read -r n; do ip netns exec "$n" ip -o addr 2>/dev/null | grep -q " $LB/" && echo "$n"; done | head -1 || true)
ip netns exec "$NS" nginx -c "$WORK/proxy.conf"
ip netns exec "$NS" haproxy -f "$WORK/haproxy.cfg"
for _ in $(seq 100); do [ "$(curl -s --noproxy '*' "http://$LB/")" = "hello from the backend" ] && break; sleep 0.1; done

# Each proxy's processes, whose CPU time is counted per request: the workers of nginx (the
# backend's and the proxy's), veeps' balancer plane, HAProxy.
for _ in $(seq 50); do [ -s "$WORK/proxy.pid" ] && [ -s "$WORK/haproxy.pid" ] && break; sleep 0.1; done
P_DIRECT=$(pgrep -P "$(cat "$WORK/backend.pid")" | tr '\n' ' ')
P_NGINX=$(pgrep -P "$(cat "$WORK/proxy.pid")" | tr '\n' ' ')
P_VEEPS=$(cut -d' ' -f1 "$WORK"/data/lb/*/pid 2>/dev/null | tr '\n' ' ')
P_HAPROXY=$(cat "$WORK/haproxy.pid")
HZ=$(getconf CLK_TCK)
cpu() { # PIDS -> "user system" clock ticks so far
  for p in $1; do [ -r "/proc/$p/stat" ] && awk '{sub(/.*\) /, ""); print $12, $13}' "/proc/$p/stat"; done \
    | awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
run() { # URL PIDS -> "rps p99_ms non2xx user_us system_us" (CPU of PIDS a request)
  local u0 s0 u1 s1 out
  read -r u0 s0 < <(cpu "$2")
  out=$(wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "$1" 2>/dev/null)
  read -r u1 s1 < <(cpu "$2")
  echo "$out" | python3 -c '
import re, sys
t = sys.stdin.read()
du, ds, hz = (float(x) for x in sys.argv[1:4])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
n = float(re.search(r"(\d+) requests in", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {errs.group(1) if errs else 0} {du / hz * 1e6 / n:.2f} {ds / hz * 1e6 / n:.2f}")' \
    "$((u1 - u0))" "$((s1 - s0))" "$HZ"
}
if [ -n "${HOLD:-}" ]; then
  # For profiling: everything up, nothing measured, until interrupted.
  echo "HTTP http://$LB/  HTTPS https://$LB/  nginx http://$LB:$NG/  HAProxy http://$LB:$HA/"
  echo "veeps plane pid(s): $P_VEEPS  nginx: $P_NGINX  HAProxy: $P_HAPROXY"
  trap "exit 0" INT TERM
  sleep infinity & wait $!
  exit 0
fi
# Interleaved rounds; each line of $WORK/results is "series rps p99 non2xx user_us sys_us".
for r in $(seq "$ROUNDS"); do
  echo "direct $(run "http://127.0.0.1:$BACK/" "$P_DIRECT")" >>"$WORK/results"
  echo "nginx-http $(run "http://$LB:$NG/" "$P_NGINX")" >>"$WORK/results"
  echo "veeps-http $(run "http://$LB/" "$P_VEEPS")" >>"$WORK/results"
  echo "haproxy-http $(run "http://$LB:$HA/" "$P_HAPROXY")" >>"$WORK/results"
  echo "nginx-https $(run "https://$LB:$NGS/" "$P_NGINX")" >>"$WORK/results"
  echo "veeps-https $(run "https://$LB/" "$P_VEEPS")" >>"$WORK/results"
  echo "haproxy-https $(run "https://$LB:$HAS/" "$P_HAPROXY")" >>"$WORK/results"
  echo "round $r of $ROUNDS done" >&2
done

python3 - "$WORK/results" "$CONNS" "$DUR" "$ROUNDS" <<'PY'
import statistics, sys
path, conns, dur, rounds = sys.argv[1:]
runs = {}
for line in open(path):
    name, rps, p99, errs, user, system = line.split()
    runs.setdefault(name, []).append(
        (float(rps), float(p99), int(errs), float(user), float(system)))
def med(name, i):
    return statistics.median(r[i] for r in runs[name])
def show(label, name):
    rs = runs[name]
    rps = [r[0] for r in rs]
    p99 = [r[1] for r in rs]
    errs = sum(r[2] for r in rs)
    print(f"{label:<18}: {statistics.median(rps):9.0f} req/s [{min(rps):.0f}-{max(rps):.0f}]"
          f"  p99 {statistics.median(p99):6.2f} ms [{min(p99):.2f}-{max(p99):.2f}]  non-2xx {errs}"
          f"  CPU a request: own {med(name, 3):5.1f} us, kernel {med(name, 4):5.1f} us")
print(f"wrk -t2 -c{conns} -d{dur}s, {rounds} interleaved rounds: median [min-max]; "
      "the backend is nginx (1 worker) on the host")
show("direct      HTTP", "direct")
show("nginx proxy HTTP", "nginx-http")
show("veeps       HTTP", "veeps-http")
show("haproxy     HTTP", "haproxy-http")
show("nginx proxy HTTPS", "nginx-https")
show("veeps       HTTPS", "veeps-https")
show("haproxy     HTTPS", "haproxy-https")
for proto in ("http", "https"):
    v, n, h = f"veeps-{proto}", f"nginx-{proto}", f"haproxy-{proto}"
    print(f"{proto.upper():<5}: veeps/nginx {med(v, 0) / med(n, 0):.2f}x throughput, "
          f"p99 {med(v, 1) / med(n, 1):.2f}x;  veeps/HAProxy {med(v, 0) / med(h, 0):.2f}x, "
          f"p99 {med(v, 1) / med(h, 1):.2f}x;  veeps/direct {med(v, 0) / med('direct', 0):.2f}x")
PY
