#!/usr/bin/env bash
# Asks Terraform for its error on each expression of errors.txt and writes errors.json.
# An expression Terraform accepts stops the script: the list must stay true.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo 'locals {}' >"$work/main.tf"
(cd "$work" && terraform init -input=false >/dev/null 2>&1)
out="$work/errors.json"
echo '{' >"$out"
first=1
bad=0
while read -r name expr; do
  case "$name" in '#'* | '') continue ;; esac
  if msg=$(cd "$work" && printf '%s\n' "$expr" | terraform console -no-color 2>&1 >/dev/null); then
    echo "terraform accepts $name: $expr" >&2
    bad=1
    continue
  fi
  # The diagnostic's title and detail, one line.
  msg=$(printf '%s\n' "$msg" | sed -n '/Error: /,$p' | sed 's/^[│╷╵ ]*//' | grep -v '^on <console-input>\|source code not available\|^$' | tr '\n' ' ' | sed 's/ *$//')
  [ "$first" = 1 ] || echo ',' >>"$out"
  first=0
  printf '  %s: %s' "$(jq -Rn --arg s "$name" '$s')" "$(jq -Rn --arg s "$msg" '$s')" >>"$out"
done <errors.txt
printf '\n}\n' >>"$out"
[ "$bad" = 0 ] || exit 1
mv "$out" errors.json
echo "wrote $(pwd)/errors.json ($(terraform version | head -1))"
