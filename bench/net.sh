#!/usr/bin/env bash
# Network data path: TCP throughput and connect latency between two veeps endpoints of one
# subnet (security groups and tier rules in place) beside the same pair built by hand with
# no veeps rules (two namespaces, veth, one bridge), in one run, and the ratio. Also the
# time to create a VPC with three subnets and ten endpoints. Needs root.
#
#   bench/net.sh     (installs iperf3 if missing; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/net.sh needs root" >&2; exit 1; }
command -v iperf3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null; }
cargo build --release --locked -p veeps >/dev/null 2>&1
BIN=$PWD/target/release/veeps
WORK=$(mktemp -d /tmp/veeps-bench-net.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
RAW=vbraw$$
cleanup() {
  [ -n "${SERVER:-}" ] && { VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$PORT "$BIN" destroy "$WORK/env" --auto-approve >/dev/null 2>&1 || true; kill "$SERVER" 2>/dev/null || true; }
  ip netns del ${RAW}a 2>/dev/null || true; ip netns del ${RAW}b 2>/dev/null || true; ip netns del ${RAW}br 2>/dev/null || true
  pkill -f "iperf3 -s -p 5201" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/env"
cat > "$WORK/env/main.hcl" <<'HCL'
resource "vpc" "bench" {
  cidr_block = "10.200.0.0/16"
  name       = "bench"
}
locals {
  tiers = { public = "10.200.0.0/24", "private-app" = "10.200.16.0/24", "private-persistence" = "10.200.32.0/24" }
}
resource "subnet" "s" {
  for_each   = local.tiers
  vpc_id     = vpc.bench.id
  cidr_block = each.value
  tier       = each.key
}
resource "security_group" "app" {
  vpc_id = vpc.bench.id
  ingress {
    protocol    = "tcp"
    from_port   = 5201
    to_port     = 5201
    cidr_blocks = ["10.200.16.0/24"]
  }
  ingress {
    protocol = "tcp"
    from_port = 22
    to_port   = 22
    self      = true
  }
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "network_endpoint" "e" {
  count              = 10
  subnet_id          = subnet.s["private-app"].id
  security_group_ids = [security_group.app.id]
}
output "ns" {
  value = network_endpoint.e[*].namespace
}
output "addr" {
  value = network_endpoint.e[*].address
}
HCL

export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$PORT
"$BIN" server --listen "127.0.0.1:$PORT" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
s=$(date +%s%N)
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
create_ms=$((($(date +%s%N) - s) / 1000000))
NS0=$("$BIN" output env ns --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
NS1=$("$BIN" output env ns --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1])')
A1=$("$BIN" output env addr --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1])')

# The same pair by hand, with no veeps rules.
ip netns add ${RAW}br; ip netns add ${RAW}a; ip netns add ${RAW}b
ip -n ${RAW}br link add br0 type bridge; ip -n ${RAW}br link set dev br0 up
for x in a b; do
  ip link add ${RAW}$x type veth peer name ${RAW}${x}p
  ip link set dev ${RAW}$x netns ${RAW}$x; ip link set dev ${RAW}${x}p netns ${RAW}br
  ip -n ${RAW}br link set dev ${RAW}${x}p master br0 up
  ip -n ${RAW}$x link set dev ${RAW}$x name eth0; ip -n ${RAW}$x link set dev eth0 up; ip -n ${RAW}$x link set dev lo up
done
ip -n ${RAW}a addr add 10.201.0.4/24 dev eth0; ip -n ${RAW}b addr add 10.201.0.5/24 dev eth0

throughput() { # ns-client ns-server addr
  ip netns exec "$2" iperf3 -s -p 5201 -1 -D >/dev/null 2>&1; sleep 0.3
  ip netns exec "$1" iperf3 -c "$3" -p 5201 -t 5 -J | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
}
connects() { # ns addr port -> microseconds per connect (mean of 2000)
  ip netns exec "$1" python3 - "$2" "$3" <<'PY'
import socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
n = 2000
t = time.perf_counter()
for _ in range(n):
    s = socket.create_connection((addr, port)); s.close()
print(int((time.perf_counter() - t) / n * 1e6))
PY
}
listener() { ip netns exec "$1" python3 -c 'import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 22)); s.listen(512)
while True: s.accept()[0].close()' & }

veeps_bps=$(throughput "$NS0" "$NS1" "$A1")
raw_bps=$(throughput ${RAW}a ${RAW}b 10.201.0.5)
listener "$NS1"; L1=$!; listener ${RAW}b; L2=$!; sleep 0.3
veeps_us=$(connects "$NS0" "$A1" 22)
raw_us=$(connects ${RAW}a 10.201.0.5 22)
kill $L1 $L2 2>/dev/null || true

python3 - "$veeps_bps" "$raw_bps" "$veeps_us" "$raw_us" "$create_ms" <<'PY'
import sys
vb, rb, vu, ru, c = map(int, sys.argv[1:])
print(f"TCP throughput, two endpoints of one subnet:  veeps {vb/1e9:.2f} Gbit/s   no rules {rb/1e9:.2f} Gbit/s   ratio {vb/rb:.2f}  (goal >= 0.95)")
print(f"TCP connect latency (mean of 2000):          veeps {vu} us          no rules {ru} us          ratio {ru/vu:.2f}  (goal >= 0.95)")
print(f"create a VPC, 3 subnets, 10 endpoints:        {c} ms  (goal < 1000 ms)")
PY
