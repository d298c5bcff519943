#!/usr/bin/env bash
# Asks `terraform fmt` for its answer on each corpus file mangled (mangle.py), and keeps it
# as NAME.want when it differs from the file itself. The files themselves are as their
# modules publish them, which is `terraform fmt`'s layout (checked here too).
set -euo pipefail
cd "$(dirname "$0")"
rm -f */*.want
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for f in */*.tf; do
  cp "$f" "$work/x.tf"
  terraform fmt "$work/x.tf" >/dev/null 2>&1
  cmp -s "$f" "$work/x.tf" || { echo "$f is not terraform fmt's layout" >&2; exit 1; }
  python3 mangle.py "$f" >"$work/x.tf"
  terraform fmt "$work/x.tf" >/dev/null 2>&1
  cmp -s "$f" "$work/x.tf" || cp "$work/x.tf" "$f.want"
done
echo "$(ls */*.tf | wc -l) files, $(ls */*.want 2>/dev/null | wc -l) with their own answer ($(terraform version | head -1))"
