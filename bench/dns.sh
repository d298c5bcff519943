#!/usr/bin/env bash
# Authoritative DNS: veeps' public listener beside NSD serving the same zone (1,000 A
# records), both on loopback, asked by dnsperf in interleaved rounds (medians, spread,
# the ratio of queries per second, and the loss of each). Goal: at least NSD's queries per
# second at equal loss. Rate limits are off on both (a benchmark is one source asking
# many times: exactly what they are there to stop). Also reports how long an ACME
# issuance against Pebble takes, when pebble is installed.
#
#   bench/dns.sh [SECONDS] [CLIENTS]   (installs dnsperf and nsd if missing)
#   PIN=1 bench/dns.sh      servers on CPU 0, dnsperf on CPU 1
#   OUTSTANDING=1000 ...    dnsperf's queries in flight (default 200)
#   ROUNDS=5 VEEPS_BIN=/path/to/veeps bench/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CLIENTS=${2:-4}
ROUNDS=${ROUNDS:-3}
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v nsd >/dev/null || missing+=(nsd)
command -v dig >/dev/null || missing+=(dnsutils)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
else
  cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-bench-dns.XXXXXX)
BASE=$((30000 + RANDOM % 10000))
API=$BASE VDNS=$((BASE + 3)) NDNS=$((BASE + 4))
cleanup() {
  set +e
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
  # The DNS data plane outlives the server: it goes too.
  [ -f "$WORK/data/dns/pid" ] && kill "$(cut -d' ' -f1 "$WORK/data/dns/pid")" 2>/dev/null
  [ -n "${NSD:-}" ] && { kill "$NSD" 2>/dev/null; wait "$NSD" 2>/dev/null; }
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$API
"$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$((BASE + 1))" \
  --s3-website-listen "127.0.0.1:$((BASE + 2))" --dns-listen "127.0.0.1:$VDNS" \
  --dns-rate-limit 0 --dns-rrl 0 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 200); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.05; done

# The same zone for both: 1,000 hosts.
mkdir -p "$WORK/env" "$WORK/nsd"
cat >"$WORK/env/main.hcl" <<'HCL'
resource "dns_zone" "z" {
  name = "bench.test"
}
resource "dns_record" "h" {
  count   = 1000
  zone_id = dns_zone.z.zone_id
  name    = "h${count.index}"
  type    = "A"
  ttl     = 300
  records = ["10.${floor(count.index / 250)}.${count.index % 250}.1"]
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
{
  echo '$ORIGIN bench.test.'
  echo '$TTL 300'
  echo '@ 900 IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 900 1209600 86400'
  echo '@ 172800 IN NS ns1.bench.test.'
  for i in $(seq 0 999); do echo "h$i IN A 10.$((i / 250)).$((i % 250)).1"; done
} >"$WORK/nsd/bench.test.zone"
cat >"$WORK/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NDNS
  port: $NDNS
  username: ""
  chroot: ""
  zonesdir: "$WORK/nsd"
  database: ""
  zonelistfile: "$WORK/nsd/zone.list"
  pidfile: "$WORK/nsd/nsd.pid"
  xfrdfile: "$WORK/nsd/xfrd.state"
  xfrdir: "$WORK/nsd"
  server-count: $(nproc)
  verbosity: 0
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.test.zone
CONF
# NSD in a session of its own, as veeps' data plane is and as either runs when deployed: with
# the kernel's autogroup scheduling (on by default), a session is one scheduling group, and a
# server sharing dnsperf's group gets CPU on other terms than one in its own (measured: NSD
# 146k q/s in dnsperf's session, 72k in its own; veeps 1.23 of NSD with autogroup off).
setsid nsd -d -c "$WORK/nsd/nsd.conf" 2>"$WORK/nsd/nsd.log" &
NSD=$!
for _ in $(seq 100); do dig +short +time=1 +tries=1 -p "$NDNS" @127.0.0.1 h1.bench.test A | grep -q . && break; sleep 0.1; done
for _ in $(seq 100); do dig +short +time=1 +tries=1 -p "$VDNS" @127.0.0.1 h1.bench.test A | grep -q . && break; sleep 0.1; done
# Both answer the same.
a=$(dig +short -p "$VDNS" @127.0.0.1 h777.bench.test A)
b=$(dig +short -p "$NDNS" @127.0.0.1 h777.bench.test A)
[ "$a" = "$b" ] && [ -n "$a" ] || { echo "the servers disagree: veeps '$a', nsd '$b'" >&2; exit 1; }

# Queries: mostly names that exist, one in ten that does not.
for i in $(seq 0 9999); do
  if [ $((i % 10)) = 9 ]; then echo "missing$i.bench.test A"; else echo "h$((i % 1000)).bench.test A"; fi
done >"$WORK/queries"

# These processes and all their descendants.
tree() { local p; for p in "$@"; do echo "$p"; tree $(pgrep -P "$p"); done; }
# CPU time (user + system, clock ticks) of these processes and their descendants so far.
ticks() {
  local t=0 p
  for p in $(tree "$@"); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
run() { # port pids... -> "qps lost cpu-microseconds-per-query"
  local port=$1; shift
  local t0; t0=$(ticks "$@")
  "${TASKSET[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$DUR" -c "$CLIENTS" -T "$CLIENTS" -q "${OUTSTANDING:-200}" 2>/dev/null \
    | awk '/Queries per second:/ {q=$4} /Queries lost:/ {l=$3} END {print q, l}' \
    | { read -r q l; t1=$(ticks "$@"); awk -v q="$q" -v l="$l" -v t="$((t1 - t0))" -v hz="$HZ" -v d="$DUR" \
        'BEGIN { printf "%s %s %.2f\n", q, l, (q > 0 ? t / hz * 1e6 / (q * d) : 0) }'; }
}
VPLANE=$(cut -d' ' -f1 "$WORK/data/dns/pid")
# PIN=1: each server on CPU 0 and dnsperf on CPU 1, so that each server has one whole core
# and the scheduler's placement is the same for both.
TASKSET=()
if [ "${PIN:-0}" = 1 ]; then
  for p in $(tree "$VPLANE" "$NSD"); do taskset -a -p -c 0 "$p" >/dev/null; done
  TASKSET=(taskset -c 1)
fi
declare -a V N VL NL VC NC
for r in $(seq "$ROUNDS"); do
  read -r q l c < <(run "$VDNS" "$VPLANE"); V+=("$q"); VL+=("$l"); VC+=("$c")
  read -r q l c < <(run "$NDNS" "$NSD"); N+=("$q"); NL+=("$l"); NC+=("$c")
  echo "round $r: veeps ${V[-1]} q/s (lost ${VL[-1]}, ${VC[-1]} us CPU a query), nsd ${N[-1]} q/s (lost ${NL[-1]}, ${NC[-1]} us CPU a query)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
mv=$(median "${V[@]}"); mn=$(median "${N[@]}")
echo
echo "veeps: median $mv q/s (spread $(spread "${V[@]}"); lost $(median "${VL[@]}") queries a round)"
echo "nsd:   median $mn q/s (spread $(spread "${N[@]}"); lost $(median "${NL[@]}") queries a round)"
awk -v a="$mv" -v b="$mn" 'BEGIN { printf "ratio veeps/nsd: %.2f (goal >= 1.00)\n", a / b }'
cv=$(median "${VC[@]}"); cn=$(median "${NC[@]}")
echo "server CPU a query: veeps $cv us (spread $(spread "${VC[@]}")), nsd $cn us (spread $(spread "${NC[@]}"))"
awk -v a="$cv" -v b="$cn" 'BEGIN { printf "CPU a query, veeps/nsd: %.2f (lower is better)\n", a / b }'

# ACME issuance time against Pebble (no sleep), when pebble is installed.
if command -v pebble >/dev/null && command -v openssl >/dev/null; then
  P=$WORK/pebble; mkdir -p "$P"; cd "$P"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out req.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null
  PP=$((BASE + 5))
  printf '{"pebble":{"listenAddress":"127.0.0.1:%s","managementListenAddress":"127.0.0.1:%s","certificate":"%s/cert.pem","privateKey":"%s/key.pem","httpPort":5002,"tlsPort":5001}}' \
    "$PP" "$((BASE + 6))" "$P" "$P" >pebble.json
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config pebble.json -dnsserver "127.0.0.1:$VDNS" >/dev/null 2>&1 &
  PEB=$!
  for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$PP/dir" && break; sleep 0.1; done
  cd - >/dev/null
  cat >>"$WORK/env/main.hcl" <<HCL
resource "certificate" "c" {
  domain_name       = "*.bench.test"
  validation_method = "acme_dns"
  acme_directory    = "https://127.0.0.1:$PP/dir"
  acme_ca_file      = "$P/ca.pem"
}
HCL
  t0=$(date +%s.%N)
  "$BIN" apply "$WORK/env" --auto-approve >/dev/null
  t1=$(date +%s.%N)
  kill "$PEB" 2>/dev/null; wait "$PEB" 2>/dev/null || true
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "ACME issuance (wildcard, DNS-01, Pebble without sleep), whole apply: %.2f s\n", b - a }'
fi
