# Sourced by the S3 benchmarks: s3_credentials API_PORT DATA_DIR exports the root's S3
# keys (from a running server's API) for the AWS CLI.
s3_credentials() {
  local cred
  cred=$(curl -s --noproxy '*' -H "Authorization: Bearer $(cat "$2/root.token")" "http://127.0.0.1:$1/v1/s3/credentials")
  AWS_ACCESS_KEY_ID=$(echo "$cred" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_key_id"])')
  AWS_SECRET_ACCESS_KEY=$(echo "$cred" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret_access_key"])')
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
}
