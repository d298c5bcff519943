#!/usr/bin/env bash
# Database cluster benchmark, in one run on a real 2-node cluster (1 writer, 1 synchronous
# reader) from a client namespace in the VPC:
#   - pgbench (TPC-B-like, scale 10) through the writer endpoint and directly to the
#     writer's address: prints the ratio (goal 0.95 or better);
#   - failover: kill -9 of the writer under a stream of inserts, the time to the first
#     committed insert through the endpoint (goal under 5 s), and acknowledged inserts
#     lost (goal 0), for several trials.
#
#   bench/db.sh [SECONDS] [CLIENTS] [TRIALS]     (needs root; builds veeps, or VEEPS_BIN=PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CLIENTS=${2:-8}
TRIALS=${3:-3}
[ "$(id -u)" = 0 ] || { echo "bench/db.sh needs root" >&2; exit 1; }
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/pgbench" ] || { echo "bench/db.sh needs PostgreSQL 15 in $PGBIN" >&2; exit 1; }
if [ -z "${VEEPS_BIN:-}" ]; then
  cargo build --release --locked -p veeps >/dev/null 2>&1
fi
BIN=${VEEPS_BIN:-$PWD/target/release/veeps}
WORK=$(mktemp -d /tmp/veeps-bench-db.XXXXXX)
chmod 755 "$WORK"
API=$((20000 + RANDOM % 10000))
cleanup() {
  [ -n "${SERVER:-}" ] && "$BIN" destroy "$WORK/env" --auto-approve >/dev/null 2>&1
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$API
(cd "$WORK" && exec "$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$((API + 1))" \
  --s3-website-listen "127.0.0.1:$((API + 2))" 2>"$WORK/server.log") &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.05; done
mkdir -p "$WORK/env"
PW=bench-password-1
cat >"$WORK/env/main.hcl" <<HCL
resource "vpc" "v" {
  cidr_block = "10.211.0.0/16"
  name       = "bench"
}
resource "subnet" "db" {
  vpc_id     = vpc.v.id
  cidr_block = "10.211.1.0/24"
  tier       = "private-persistence"
}
resource "subnet" "app" {
  vpc_id     = vpc.v.id
  cidr_block = "10.211.2.0/24"
  tier       = "private-app"
}
resource "security_group" "app" {
  vpc_id = vpc.v.id
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "security_group" "db" {
  vpc_id = vpc.v.id
  ingress {
    protocol        = "tcp"
    from_port       = 5432
    to_port         = 5432
    security_groups = [security_group.app.id]
  }
}
resource "network_endpoint" "client" {
  subnet_id          = subnet.app.id
  security_group_ids = [security_group.app.id]
}
resource "db_cluster" "bench" {
  name                  = "bench"
  instance_count        = 2
  synchronous_replicas  = 1
  subnets               = [subnet.db.id]
  security_groups       = [security_group.db.id]
  master_username       = "bench"
  master_password       = "$PW"
  database_name         = "bench"
  backup_retention_days = 0
  memory                = 1024
  cpu                   = 2
}
output "ns" {
  value = network_endpoint.client.namespace
}
output "endpoint" {
  value = db_cluster.bench.endpoint
}
HCL
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
NS=$("$BIN" output "$WORK/env" ns | tr -d '"')
EP=$("$BIN" output "$WORK/env" endpoint | tr -d '"')
writer() { "$BIN" --json db status env bench | python3 -c '
import json, sys
w = [n for n in json.load(sys.stdin)["nodes"] if n["role"] == "writer"][0]
print(w["address"], w["pid"] or 0, w["name"])'; }
export PGPASSWORD=$PW PGSSLMODE=require PGUSER=bench PGDATABASE=bench
in_ns() { ip netns exec "$NS" "$@"; }
in_ns "$PGBIN/pgbench" -h "$EP" -i -s 10 -q >/dev/null 2>&1
tps() { # HOST -> tps
  in_ns "$PGBIN/pgbench" -h "$1" -c "$CLIENTS" -j 2 -T "$DUR" -n 2>/dev/null \
    | awk '/^tps/ {print int($3); exit}'
}
read -r WADDR _ _ <<<"$(writer)"
direct=$(tps "$WADDR")
through=$(tps "$EP")
printf 'pgbench (%s clients, %ss, TLS): direct %s tps, endpoint %s tps, ratio %.2f (goal >= 0.95)\n' \
  "$CLIENTS" "$DUR" "$direct" "$through" "$(python3 -c "print($through / max($direct, 1))")"

in_ns "$PGBIN/psql" -h "$EP" -Atq -c "CREATE TABLE IF NOT EXISTS f (id int primary key)"
for trial in $(seq "$TRIALS"); do
  ACKS=$WORK/acks-$trial
  : >"$ACKS"
  (
    i=$((trial * 1000000))
    while [ ! -f "$WORK/stop" ]; do
      i=$((i + 1))
      start=$(date +%s.%N)
      # Bounded: a client left hanging shows as a late first insert, not a stuck benchmark.
      if timeout 10 ip netns exec "$NS" "$PGBIN/psql" -h "$EP" -Atq -c "INSERT INTO f VALUES ($i)" >/dev/null 2>&1; then
        echo "$i $start $(date +%s.%N)" >>"$ACKS"
      fi
    done
  ) &
  LOOP=$!
  sleep 2
  read -r _ PID NAME <<<"$(writer)"
  T0=$(date +%s.%N)
  kill -9 "$PID"
  sleep 8
  touch "$WORK/stop"; wait "$LOOP"; rm -f "$WORK/stop"
  # The first insert begun after the kill that committed: when it was acknowledged.
  first=$(awk -v t0="$T0" '$2 > t0 {print $3 - t0; exit}' "$ACKS")
  in_ns "$PGBIN/psql" -h "$EP" -Atq -c "SELECT id FROM f" | sort >"$WORK/present"
  lost=$(awk '{print $1}' "$ACKS" | sort | comm -23 - "$WORK/present" | wc -l)
  printf 'failover %s: killed %s, first committed insert after %.2f s (goal < 1), %s of %s acknowledged inserts lost (goal 0)\n' \
    "$trial" "$NAME" "${first:-999}" "$lost" "$(wc -l <"$ACKS")"
  echo "${first:-999} $lost" >>"$WORK/failovers"
  # Let the old writer rejoin before the next trial.
  for _ in $(seq 120); do
    "$BIN" --json db status env bench | python3 -c '
import json, sys
sys.exit(0 if all(n["healthy"] for n in json.load(sys.stdin)["nodes"]) else 1)' && break
    sleep 0.5
  done
done
python3 - "$WORK/failovers" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
t = sorted(r[0] for r in rows)
p99 = t[min(len(t) - 1, int(round(0.99 * (len(t) - 1))))]
print(f"failover over {len(t)} trials: median {statistics.median(t):.2f} s, p99 {p99:.2f} s, "
      f"max {t[-1]:.2f} s (goal p99 < 1 s); acknowledged inserts lost {int(sum(r[1] for r in rows))} (goal 0)")
PY
