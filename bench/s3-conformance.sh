#!/usr/bin/env bash
# The public S3 conformance suite (ceph/s3-tests) against a fresh veeps server: runs the
# tests that SELECTION picks (a pytest -k expression), writes one PASSED/FAILED line per
# test to OUT (sorted, so two builds' files diff), and prints the counts. Every section the
# suite's configuration wants gets the root key (veeps has no tenants or alt accounts), so
# tests of other accounts, ACLs and tenants fail by design; compare builds, not totals.
#
#   bench/s3-conformance.sh [SELECTION] [OUT]
#   VEEPS_BIN=/path/to/veeps bench/s3-conformance.sh "get_object or presigned" old.txt
#
# Installs pytest and the suite's Python packages into a virtualenv under ~/.cache the
# first time. The suite's path: S3_TESTS (default ../shared/conformance/s3-tests).
set -uo pipefail
cd "$(dirname "$0")/.."
SELECTION=${1:-"get_object or presigned or object_read or head_object or object_raw"}
OUT=${2:-/dev/stdout}
SUITE=$(realpath "${S3_TESTS:-../shared/conformance/s3-tests}")
[ -d "$SUITE/s3tests" ] || { echo "no s3-tests at $SUITE (set S3_TESTS)" >&2; exit 2; }
VENV=${HOME}/.cache/veeps-s3-tests
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q pytest boto3 munch isodate pytz \
    httplib2 lxml requests pyyaml >/dev/null || { echo "cannot install the suite's packages" >&2; exit 2; }
fi
if [ -z "${VEEPS_BIN:-}" ]; then
  cargo build --release --locked -p veeps >/dev/null 2>&1
fi
BIN=${VEEPS_BIN:-$PWD/target/release/veeps}
WORK=$(mktemp -d /tmp/veeps-bench-s3conf.XXXXXX)
API=$((20000 + RANDOM % 10000)); S3=$((API + 1))
cleanup() {
  [ -n "${SERVER:-}" ] && { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT
export VEEPS_DATA_DIR=$WORK/data
"$BIN" server --listen "127.0.0.1:$API" --s3-listen "127.0.0.1:$S3" --s3-website-listen "127.0.0.1:$((API + 2))" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 600); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$API/" && break; sleep 0.2; done
. bench/s3-credentials.sh
s3_credentials "$API" "$WORK/data"
section() {
  printf '[%s]\naccess_key = %s\nsecret_key = %s\ndisplay_name = veeps\nuser_id = veeps\nemail = veeps@example.com\ntenant = veeps\n\n' \
    "$1" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
}
{
  printf '[DEFAULT]\nhost = 127.0.0.1\nport = %s\nis_secure = False\nssl_verify = False\n\n' "$S3"
  printf '[fixtures]\nbucket prefix = s3t-{random}-\n\n'
  for s in "s3 main" "s3 alt" "s3 tenant" "iam" "iam root" "iam alt root"; do section "$s"; done
} >"$WORK/s3tests.conf"
(cd "$SUITE" && S3TEST_CONF=$WORK/s3tests.conf timeout 1800 "$VENV/bin/python" -m pytest -q \
  -p no:cacheprovider -rA s3tests/functional/test_s3.py -k "$SELECTION" 2>&1) \
  | grep -E '^(PASSED|FAILED|ERROR) ' | sed 's/ - .*//' | sort >"$WORK/results"
cp "$WORK/results" "$OUT" 2>/dev/null || cat "$WORK/results"
echo "$(grep -c '^PASSED' "$WORK/results") passed, $(grep -c -E '^(FAILED|ERROR)' "$WORK/results") failed" >&2
