#!/usr/bin/env bash
# The CDN's edge beside nginx's proxy_cache, both in front of the same origin (nginx
# serving files), both warm: cache hits per second and p99 for a 4 KiB and a 1 MiB object,
# wrk in interleaved rounds (medians, spread, the ratio). Goal: at least nginx's requests
# per second at equal or lower p99. Also: origin requests for 100 concurrent misses of one
# new object (each cache), and the edge's memory per cached 4 KiB object.
#
#   bench/cdn.sh [SECONDS] [CONNECTIONS]   (installs nginx and wrk if missing)
#   ROUNDS=5 VEEPS_BIN=/path/to/veeps bench/cdn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${2:-64}
ROUNDS=${ROUNDS:-3}
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -n "${VEEPS_BIN:-}" ]; then
  BIN=$VEEPS_BIN
else
  cargo build --release --locked -p veeps >/dev/null 2>&1
  BIN=$PWD/target/release/veeps
fi
WORK=$(mktemp -d /tmp/veeps-bench-cdn.XXXXXX)
BASE=$((30000 + RANDOM % 10000))
ORIGIN=$BASE NGX=$((BASE + 1)) EDGE=$((BASE + 2))
cleanup() {
  set +e
  for p in "$WORK"/origin/nginx.pid "$WORK"/proxy/nginx.pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null
  done
  [ -n "${PLANE:-}" ] && { kill "$PLANE" 2>/dev/null; wait "$PLANE" 2>/dev/null; }
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

# The origin: nginx serving files, counting what it is asked.
mkdir -p "$WORK/origin/www" "$WORK/proxy/cache" "$WORK/edge"
head -c 4096 /dev/urandom | base64 -w 0 | head -c 4096 >"$WORK/origin/www/4k.txt"
head -c 1048576 /dev/urandom >"$WORK/origin/www/1m.bin"
for i in $(seq 1000); do head -c 4096 /dev/zero | tr '\0' 'x' >"$WORK/origin/www/o$i.txt"; done
cat >"$WORK/origin/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 1;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log;
events { worker_connections 4096; }
http {
  access_log $WORK/origin/access.log;
  server {
    listen 127.0.0.1:$ORIGIN;
    root $WORK/origin/www;
    location / { add_header Cache-Control "max-age=3600"; }
  }
}
CONF
nginx -c "$WORK/origin/nginx.conf" -p "$WORK/origin" &
# nginx's cache, as its documentation sets it up, with misses collapsed (proxy_cache_lock)
# and keep-alive to the origin; the same worker count as the edge's threads.
cat >"$WORK/proxy/nginx.conf" <<CONF
daemon off;
user root;
worker_processes $(nproc);
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path $WORK/proxy/cache levels=1:2 keys_zone=edge:32m max_size=4g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
CONF
nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy" &
# The edge, run by itself from a configuration file (as the control plane writes it).
cat >"$WORK/edge/config.json" <<JSON
{"http":"127.0.0.1:$EDGE","https":null,"bounds":null,"distributions":[{"id":"EBENCH","env":"bench",
"domain":"ebench.cdn.localhost","aliases":["static.bench.test"],"enabled":true,"default_root_object":null,
"redirect_to_https":false,"origins":[{"id":"o","addr":"127.0.0.1:$ORIGIN","host":"origin","path":""}],
"behaviors":[{"pattern":"*","origin":"o","ttls":{"min":0,"default":3600,"max":3600},
"allowed_methods":["GET","HEAD"],"cached_methods":["GET","HEAD"],"query_string":false,"headers":[],
"cookies":[],"compress":false}],"custom_errors":[],"tls":null}]}
JSON
"$BIN" cdn-plane "$WORK/edge" 2>"$WORK/edge.log" &
PLANE=$!
for port in $ORIGIN $NGX $EDGE; do
  for _ in $(seq 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
get() { curl -s --noproxy '*' -H 'Host: static.bench.test' "$@"; }
# Both answer the same, and both warm.
for f in 4k.txt 1m.bin; do
  for port in $NGX $EDGE; do get -o /dev/null "http://127.0.0.1:$port/$f"; get -o "$WORK/got" "http://127.0.0.1:$port/$f"; cmp -s "$WORK/got" "$WORK/origin/www/$f" || { echo "port $port answered $f wrong" >&2; exit 1; }; done
done
[ "$(get -D - -o /dev/null "http://127.0.0.1:$EDGE/4k.txt" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache" {print $2}')" = "Hit from veeps" ] || { echo "the edge does not hit" >&2; exit 1; }

run() { # port path -> "rps p99_ms"
  wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -H 'Host: static.bench.test' "http://127.0.0.1:$1$2" 2>/dev/null \
    | awk '/Requests\/sec/ {r=$2} /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v} END {print r, p}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
echo "wrk -t2 -c$CONNS, ${DUR}s a run, $ROUNDS interleaved rounds; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for obj in /4k.txt /1m.bin; do
  VR=(); VP=(); NR_=(); NP=()
  for r in $(seq "$ROUNDS"); do
    read -r q p < <(run "$EDGE" "$obj"); VR+=("$q"); VP+=("$p")
    read -r q p < <(run "$NGX" "$obj"); NR_+=("$q"); NP+=("$p")
    echo "  $obj round $r: veeps ${VR[-1]} req/s (p99 ${VP[-1]} ms), nginx ${NR_[-1]} req/s (p99 ${NP[-1]} ms)"
  done
  mv=$(median "${VR[@]}"); mn=$(median "${NR_[@]}"); pv=$(median "${VP[@]}"); pn=$(median "${NP[@]}")
  echo "$obj: veeps median $mv req/s (spread $(spread "${VR[@]}")), p99 $pv ms; nginx median $mn req/s (spread $(spread "${NR_[@]}")), p99 $pn ms"
  awk -v a="$mv" -v b="$mn" -v pa="$pv" -v pb="$pn" 'BEGIN { printf "  ratio veeps/nginx: %.2f req/s, %.2f p99 (goal >= 1.00 req/s at <= 1.00 p99)\n", a / b, pa / pb }'
done

# 100 concurrent misses of one new object: origin requests each cache made.
asked() { grep -c " /$1 " "$WORK/origin/access.log" || true; }
for port in $EDGE $NGX; do
  name=miss-$port.txt
  head -c 65536 /dev/zero | tr '\0' 'y' >"$WORK/origin/www/$name"
  pids=()
  for _ in $(seq 100); do get -o /dev/null "http://127.0.0.1:$port/$name" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  who=$([ "$port" = "$EDGE" ] && echo veeps || echo nginx)
  echo "100 concurrent misses through $who: $(asked "$name") origin request(s)"
done

# Memory per cached object: the edge's resident memory before and after 1,000 objects of
# 4 KiB.
rss() { awk '/VmRSS/ {print $2}' "/proc/$PLANE/status"; }
before=$(rss)
for i in $(seq 1000); do printf 'url = "http://127.0.0.1:%s/o%s.txt"\noutput = "/dev/null"\n' "$EDGE" "$i"; done >"$WORK/urls"
get -K "$WORK/urls" --parallel --parallel-max 16 2>/dev/null || get -K "$WORK/urls"
after=$(rss)
echo "edge memory: $(( (after - before) * 1024 / 1000 )) bytes per cached 4 KiB object (RSS $before -> $after KiB)"
