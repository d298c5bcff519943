#!/usr/bin/env bash
# API calls per second authorised by the IAM evaluator (a user's token, its groups'
# policies evaluated on every call) beside the root token (no evaluation), same server,
# same route, interleaved rounds; prints medians, the spread and the ratio (goal >= 0.9).
#
#   bench/authz.sh [SECONDS] [CONNECTIONS]   (installs wrk if missing)
#   ROUNDS=5 VEEPS_BIN=/path/to/veeps bench/authz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${2:-16}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
ROUNDS=${ROUNDS:-3}
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
else
  cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-bench-authz.XXXXXX)
API=$((20000 + RANDOM % 10000))
cleanup() {
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
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
print(f"{float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)):.0f}")'
}
for r in $(seq "$ROUNDS"); do
  echo "root $(rate "$ROOT")" >>"$WORK/results"
  echo "user $(rate "$USER_TOKEN")" >>"$WORK/results"
  echo "round $r of $ROUNDS done" >&2
done
python3 - "$WORK/results" "$ROUNDS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, v = line.split()
    runs.setdefault(name, []).append(float(v))
def cell(n):
    v = runs[n]
    return statistics.median(v), f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]"
r, rs = cell("root")
u, us = cell("user")
print(f"{sys.argv[2]} interleaved rounds: median [min-max], GET /v1/envs")
print(f"{'root token req/s':>24} {'IAM user req/s':>24} {'ratio':>6}")
print(f"{rs:>24} {us:>24} {u / max(r, 1):6.2f}")
PY
