#!/usr/bin/env bash
# Plan speed: a generated configuration of 1,000 resources in 50 modules, planned by a
# real veeps server, first against empty state (1,000 to add) and then after apply (1,000
# refreshes, no changes). Goal: each plan under 1 s. Also times `veeps --help` (goal < 20 ms).
#
#   bench/plan.sh            (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p veeps >/dev/null
BIN=$PWD/target/release/veeps
WORK=$(mktemp -d /tmp/veeps-bench-plan.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/env" "$WORK/modules/unit"
cat > "$WORK/modules/unit/main.hcl" <<'HCL'
variable "index" {
  type = number
}
locals {
  name = format("unit-%03d", var.index)
}
HCL
for r in $(seq 0 19); do
  cat >> "$WORK/modules/unit/main.hcl" <<HCL
resource "random_id" "r$r" {
  byte_length = 4
  prefix      = "\${local.name}-$r-"
}
HCL
done
echo 'output "first" { value = random_id.r0.hex }' >> "$WORK/modules/unit/main.hcl"
for m in $(seq 0 49); do
  printf 'module "u%d" {\n  source = "../modules/unit"\n  index  = %d\n}\n' "$m" "$m" >> "$WORK/env/main.hcl"
done

export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$PORT
"$BIN" server --listen "127.0.0.1:$PORT" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done

# Milliseconds a command takes.
t() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
cd "$WORK"
empty=$(t "$BIN" plan env)
applied_in=$(t "$BIN" apply env --auto-approve)
applied=$(t "$BIN" plan env)
help=$(t "$BIN" --help)
resources=$("$BIN" state list env | wc -l)
printf 'resources in state:            %d (50 modules x 20)\n' "$resources"
printf 'plan, empty state (1000 adds):  %d ms  (goal < 1000 ms)\n' "$empty"
printf 'apply of 1000 resources:        %d ms  (each recorded durably)\n' "$applied_in"
printf 'plan, after apply (no change):  %d ms  (goal < 1000 ms)\n' "$applied"
printf 'veeps --help:                   %d ms  (goal < 20 ms)\n' "$help"
