#!/usr/bin/env bash
# Auto scaling groups: how long from an instance's death to its replacement passing its
# health check, and how long a group of 20 takes from apply to 20 in service; beside the
# same app started directly on the host until it answers (the floor: what python and the
# kernel cost), in the same run. Needs root.
#
#   bench/asg.sh     (builds veeps; VEEPS_BIN=PATH uses that build)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/asg.sh needs root (namespaces and cgroups)" >&2; exit 1; }
# VEEPS_BIN=PATH runs that build instead of building this checkout.
if [ -z "${VEEPS_BIN:-}" ]; then
  cargo build --release --locked -p veeps >/dev/null 2>&1
fi
BIN=${VEEPS_BIN:-$PWD/target/release/veeps}
WORK=$(mktemp -d /tmp/veeps-bench-asg.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
cleanup() {
  # Instances outlive the server: stop everything this run started, whatever happened.
  [ -n "${SERVER:-}" ] && VEEPS_DATA_DIR=$WORK/data "$BIN" down >/dev/null 2>&1
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  [ -n "${DIRECT:-}" ] && kill "$DIRECT" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/app" "$WORK/env"
cat >"$WORK/app/app.py" <<'PY'
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
PY
config() {
  cat <<HCL
resource "vpc" "v" {
  name       = "bench"
  cidr_block = "10.99.0.0/18"
}
resource "subnet" "a" {
  vpc_id     = vpc.v.id
  cidr_block = "10.99.16.0/24"
  tier       = "private-app"
}
resource "subnet" "b" {
  vpc_id     = vpc.v.id
  cidr_block = "10.99.17.0/24"
  tier       = "private-app"
}
resource "image" "app" {
  name       = "bench"
  source     = "$WORK/app"
  entrypoint = ["python3", "app.py"]
}
resource "launch_template" "app" {
  name              = "bench"
  image_id          = image.app.id
  cpu               = 0.1
  memory            = 64
  port              = 8080
  health_check_path = "/"
}
resource "autoscaling_group" "app" {
  name             = "bench"
  launch_template  = launch_template.app.id
  subnets          = [subnet.a.id, subnet.b.id]
  min_size         = 0
  max_size         = 40
  desired_capacity = $1
}
HCL
}
export VEEPS_DATA_DIR=$WORK/data VEEPS_ADDR=http://127.0.0.1:$PORT
(cd "$WORK" && exec "$BIN" server --listen "127.0.0.1:$PORT" 2>"${SERVER_LOG:-$WORK/server.log}") &
SERVER=$!
for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
in_service() {
  "$BIN" instances env --json | python3 -c 'import json,sys; g=json.load(sys.stdin); print(sum(i["lifecycle"]=="InService" for x in g for i in x["instances"]))'
}
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# The floor: the app started directly on the host until it answers.
s=$(date +%s%N)
HOST=127.0.0.1 PORT=$((PORT + 1)) python3 "$WORK/app/app.py" &
DIRECT=$!
until curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$((PORT + 1))/"; do sleep 0.005; done
direct_ms=$(ms "$s")
kill "$DIRECT"; DIRECT=

# The network and the image first, so the timings below are the group's alone.
config 0 >"$WORK/env/main.hcl"
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
config 20 >"$WORK/env/main.hcl"
s=$(date +%s%N)
"$BIN" apply "$WORK/env" --auto-approve >/dev/null
until [ "$(in_service)" = 20 ]; do sleep 0.02; done
launch_ms=$(ms "$s")

# Death to a healthy replacement, five times: from the kill of an instance in service to
# another instance in its place passing its health check (the group back at 20 in service
# without the victim), watched through the API every 5 ms.
replace=()
for _ in 1 2 3 4 5; do
  replace+=("$(python3 - "$PORT" "$WORK/data/root.token" <<'PY'
import json, os, signal, sys, time, urllib.request
port, token = sys.argv[1], open(sys.argv[2]).read().strip()
def insts():
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/envs/env/instances",
                                 headers={"authorization": f"Bearer {token}"})
    g = json.load(urllib.request.urlopen(req))
    return [i for x in g for i in x["instances"]]
live = [i for i in insts() if i["lifecycle"] == "InService" and os.path.exists(f"/proc/{i['pid']}")]
victim = live[0]
t0 = time.monotonic()
os.kill(victim["pid"], signal.SIGKILL)
while True:
    now = insts()
    ok = [i for i in now if i["lifecycle"] == "InService" and i["id"] != victim["id"]]
    if len(ok) == 20:
        break
    time.sleep(0.005)
print(int((time.monotonic() - t0) * 1000))
PY
)")
done
config 0 >"$WORK/env/main.hcl"
"$BIN" destroy "$WORK/env" --auto-approve >/dev/null

python3 - "$direct_ms" "$launch_ms" "${replace[@]}" <<'PY'
import sys, statistics
direct, launch, *rep = map(int, sys.argv[1:])
med = statistics.median(rep)
print(f"app started directly until it answers:  {direct} ms (the floor)")
print(f"group of 20 from apply to 20 in service: {launch} ms (goal < 3000; {launch / 20:.0f} ms an instance, {launch / 20 / max(direct, 1):.1f}x the floor)")
print(f"instance death to healthy replacement:   median {med:.0f} ms of {rep} (goal < 2000; {med / max(direct, 1):.1f}x the floor)")
PY
