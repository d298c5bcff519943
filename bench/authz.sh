#!/usr/bin/env bash
# Two costs of the security baseline, each in interleaved rounds (medians, spread, ratio):
# 1. API calls per second authorised by the IAM evaluator (a user's token, its groups'
#    policies evaluated on every call) beside the root token (no evaluation), same server,
#    same route (goal >= 0.9).
# 2. (as root) New connections per second through a load balancer, from a client network
#    namespace whose packets cross the host's ban hooks, with 100,000 addresses in the ban
#    set beside an empty set (goal >= 0.95).
#
#   bench/authz.sh [SECONDS] [CONNECTIONS]   (installs wrk and nginx if missing)
#   ROUNDS=5 VEEPS_BIN=/path/to/veeps bench/authz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${2:-16}
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
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
WORK=$(mktemp -d /tmp/veeps-bench-authz.XXXXXX)
API=$((20000 + RANDOM % 10000))
CNS=vbench$$   # the client's namespace and its veth to the host
cleanup() {
  set +e   # every step runs, whatever the previous one did
  [ -n "${SERVER:-}" ] && [ -f "$WORK/env/main.hcl" ] && "$BIN" destroy "$WORK/env" --auto-approve >/dev/null 2>&1
  [ -n "${SERVER:-}" ] && "$BIN" down >/dev/null 2>&1
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  [ -f "$WORK/backend.pid" ] && kill "$(cat "$WORK/backend.pid")" 2>/dev/null
  ip netns del "$CNS" 2>/dev/null; ip link del "$CNS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$API VEEPS_SESSION=$WORK/session.json
"$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$((API + 1))" --s3-website-listen "127.0.0.1:$((API + 2))" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 200); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.05; done
# A user whose groups attach a few policies, as a team's would.
mkdir -p "$WORK/bench"
cat >"$WORK/bench/iam.hcl" <<'HCL'
resource "iam_policy" "dev" {
  name = "dev"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["env:Get*", "env:List*", "env:Plan"], Resource = "*" },
      { Effect = "Allow", Action = ["env:Apply", "db:*"], Resource = ["arn:veeps:env:stage:*", "arn:veeps:db:stage:*"] },
      { Effect = "Allow", Action = "kms:Decrypt", Resource = "*", Condition = { Bool = { "aws:MultiFactorAuthPresent" = "true" } } },
      { Effect = "Deny", Action = "db:Delete*", Resource = "*" },
    ]
  })
}
resource "iam_group" "developers" {
  name     = "developers"
  policies = [iam_policy.dev.name, "ReadOnlyAccess"]
}
resource "iam_user" "dana" {
  name   = "dana"
  groups = [iam_group.developers.name]
}
HCL
"$BIN" apply "$WORK/bench" --auto-approve >/dev/null
ROOT=$(cat "$WORK/data/root.token")
USER_TOKEN=$("$BIN" iam token create dana --ttl 1h 2>/dev/null)
URL="http://127.0.0.1:$API/v1/envs"
rate() { # TOKEN -> req/s
  wrk -t2 -c"$CONNS" -d"${DUR}s" -H "authorization: Bearer $1" "$URL" 2>/dev/null | python3 -c '
import re, sys
t = sys.stdin.read()
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs:
    sys.exit(f"{errs.group(1)} requests failed")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
print(f"{rps:.0f}")'
}
for r in $(seq "$ROUNDS"); do
  echo "root $(rate "$ROOT")" >>"$WORK/results"
  echo "user $(rate "$USER_TOKEN")" >>"$WORK/results"
  echo "round $r of $ROUNDS done" >&2
done
report() { # FILE A-NAME B-NAME TITLE
python3 - "$@" "$ROUNDS" <<'PY'
import statistics, sys
path, a, b, title, rounds = sys.argv[1:6]
runs = {}
for line in open(path):
    name, v = line.split()
    runs.setdefault(name, []).append(float(v))
def cell(n):
    v = runs[n]
    return statistics.median(v), f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]"
x, xs = cell(a)
y, ys = cell(b)
print(f"{title}, {rounds} interleaved rounds: median [min-max]")
print(f"{a:>24} {b:>24} {'ratio':>6}")
print(f"{xs:>24} {ys:>24} {y / max(x, 1):6.2f}")
PY
}
report "$WORK/results" root user "API calls/s, GET /v1/envs (root token; IAM user's token)"

[ "$(id -u)" = 0 ] || { echo "(the ban set measurement needs root; skipped)"; exit 0; }
# A balancer in a VPC before a backend on the host, as bench/lb.sh builds it.
BACK=$((API + 3))
cat >"$WORK/backend.conf" <<NGX
worker_processes 1;
pid $WORK/backend.pid;
error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; server { listen $BACK reuseport backlog=4096; location / { return 200 "hello\n"; } } }
NGX
nginx -c "$WORK/backend.conf"
mkdir -p "$WORK/env"
cat >"$WORK/env/main.hcl" <<HCL
resource "vpc" "v" {
  name       = "bban"
  cidr_block = "10.97.0.0/18"
}
resource "subnet" "pub" {
  vpc_id     = vpc.v.id
  cidr_block = "10.97.0.0/24"
  tier       = "public"
}
resource "security_group" "lb" {
  vpc_id = vpc.v.id
  ingress {
    protocol    = "tcp"
    from_port   = 80
    to_port     = 80
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "ban_policy" "p" {
  name = "bench"
  jail {
    source = "api"
  }
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
HOSTIP=$(ip -o route get 10.97.0.4 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
cat >>"$WORK/env/main.hcl" <<HCL
resource "target_group" "backend" {
  name = "backend"
  port = $BACK
}
resource "target_group_attachment" "backend" {
  target_group_arn = target_group.backend.arn
  target_id        = "$HOSTIP"
}
resource "load_balancer" "bench" {
  name            = "bench"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
  access_logs     = false
}
resource "listener" "http" {
  load_balancer_arn = load_balancer.bench.arn
  port              = 80
  default_action {
    type             = "forward"
    target_group_arn = target_group.backend.arn
  }
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
LB=$("$BIN" state show env load_balancer.bench | sed -n 's/.*dns_name *= *"\(.*\)".*/\1/p')
# The client: a namespace behind a veth, routed through the host (its forward hook).
ip netns add "$CNS"
ip link add "$CNS" type veth peer name eth0 netns "$CNS"
ip addr add 10.251.0.1/30 dev "$CNS"; ip link set "$CNS" up
ip netns exec "$CNS" ip addr add 10.251.0.2/30 dev eth0
ip netns exec "$CNS" ip link set eth0 up; ip netns exec "$CNS" ip link set lo up
ip netns exec "$CNS" ip route add default via 10.251.0.1
sysctl -qw net.ipv4.ip_forward=1
for _ in $(seq 100); do [ "$(ip netns exec "$CNS" curl -s -m 1 "http://$LB/")" = "hello" ] && break; sleep 0.1; done
[ "$(ip netns exec "$CNS" curl -s -m 1 "http://$LB/")" = "hello" ] || { echo "the client cannot reach the balancer at $LB" >&2; exit 1; }
TABLE=$(nft list tables | awk '/ban$/ {print $3}' | while read -r t; do nft list table inet "$t" >/dev/null 2>&1 && echo "$t"; done | grep "^v$(printf %s "$WORK/data" | sha256sum | cut -c1-5)ban$" || true)
[ -n "$TABLE" ] || { echo "no ban table for this server" >&2; exit 1; }
# 100,000 addresses from 100.64.0.0/10, none of them the client's, in one transaction.
python3 - "$TABLE" >"$WORK/100k.nft" <<'PY'
import sys
t = sys.argv[1]
print(f"flush set inet {t} ban4")
ips = [f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(100000)]
for k in range(0, len(ips), 1000):
    print(f"add element inet {t} ban4 {{ " + ", ".join(f"{ip} timeout 3600s" for ip in ips[k:k + 1000]) + " }")
PY
conns() { # -> new connections/s (one request each)
  ip netns exec "$CNS" wrk -t2 -c"$CONNS" -d"${DUR}s" -H "Connection: close" "http://$LB/" 2>/dev/null | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
print(f"{rps:.0f}")'
}
for r in $(seq "$ROUNDS"); do
  nft flush set inet "$TABLE" ban4
  echo "empty $(conns)" >>"$WORK/bans"
  nft -f "$WORK/100k.nft"
  [ "$(nft list set inet "$TABLE" ban4 | grep -o timeout | wc -l)" -ge 100000 ] || { echo "the set did not take 100,000 addresses" >&2; exit 1; }
  echo "100k-banned $(conns)" >>"$WORK/bans"
  echo "ban round $r of $ROUNDS done" >&2
done
nft flush set inet "$TABLE" ban4
report "$WORK/bans" empty 100k-banned "New connections/s through a balancer (empty ban set; 100,000 banned addresses)"
