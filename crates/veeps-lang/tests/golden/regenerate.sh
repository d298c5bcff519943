#!/usr/bin/env bash
# Asks Terraform for the answers to functions.tf and writes them to functions.json.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp functions.tf "$work/main.tf" && cp -r hello.txt rsa-*.txt files "$work/"
(cd "$work" && terraform init -input=false >/dev/null && terraform apply -no-color -auto-approve -input=false >/dev/null && terraform output -json) >"$work/out.json"
mv "$work/out.json" functions.json
python3 canonical.py
echo "wrote $(pwd)/functions.json ($(terraform version | head -1))"
