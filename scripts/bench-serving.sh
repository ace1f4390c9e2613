#!/usr/bin/env bash
# Serving benchmark with real ringhost nodes (release build) on loopback:
# wrk -t2 -c64 -d10s --latency, 1 KiB responses, keep-alive, interleaved
# repetitions, medians, ratios to HAProxy from the same run, p99 and the
# proxy's CPU per request.
#
#   scripts/bench-serving.sh                 # as root (ZFS), from anywhere
#   REPS=5 DURATION=10s scripts/bench-serving.sh
#   TARGETS="haproxy rh-proxy-master" scripts/bench-serving.sh   # a subset
#   NODE_ARGS="--snapshot-interval 5s" scripts/bench-serving.sh  # node flags
#
# Two ringhost nodes (n1, n2) run with file-backed ZFS pools, gossip and
# tunnels over the QUIC mesh, exactly as in production. Targets:
#   direct               nginx serving the 1 KiB file
#   haproxy              HAProxy (mode http, keep-alive) in front of nginx
#   ringhost-master      a static site (1 KiB index.html), request sent to
#                        the site's master: ringhost serves the file itself
#   ringhost-other       the same, sent to the other node: QUIC tunnel to
#                        the master
#   rh-proxy-master      a command site whose process is nginx: ringhost at
#                        the master forwards to it (the HAProxy-like path)
#   rh-proxy-other       the same through the other node
# CPU per request counts the ringhost processes on the path (both nodes for
# *-other), HAProxy alone for haproxy; nginx's own CPU is not counted. wrk,
# the proxies and the backend share the machine's cores: compare ratios
# from one run, not absolute numbers.
set -euo pipefail

REPS=${REPS:-5}
DURATION=${DURATION:-10s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/ringhost-bench.XXXXXX)
chmod 755 "$WORK"  # nginx workers run as an unprivileged user
PIDS=()
NODE_PIDS=()
cleanup() {
  # Nodes first, politely: they stop their runtimes and export their pools.
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need haproxy || ! need nginx; then
  apt-get update -qq && apt-get install -y -qq wrk haproxy nginx-light >/dev/null
fi
pgrep -x zfs-fuse >/dev/null || ! need zfs-fuse || zfs-fuse
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -q -p ringhost --bin ringhost)
BIN="$TARGET_DIR/release/ringhost"

BACKEND_PORT=18181 HAPROXY_PORT=18182

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2; exit 1
}
json() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# The 1 KiB file and nginx (direct target, HAProxy's backend).
mkdir -p "$WORK/www" "$WORK/nginx" "$WORK/site-nginx"
head -c 1024 /dev/zero | tr '\0' x > "$WORK/www/index.html"
nginx_conf() { # port dir
  cat <<CONF
worker_processes 1;
daemon off;
pid $2/nginx.pid;
error_log $2/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $2; proxy_temp_path $2;
  fastcgi_temp_path $2; uwsgi_temp_path $2; scgi_temp_path $2;
  server { listen 127.0.0.1:$1; root $WORK/www; }
}
CONF
}
nginx_conf "$BACKEND_PORT" "$WORK/nginx" > "$WORK/nginx/nginx.conf"
nginx -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
wait_port $BACKEND_PORT
# The command site's nginx: same file, on the port ringhost gives it.
nginx_conf @PORT@ "$WORK/site-nginx" > "$WORK/site-nginx/nginx.tmpl"

cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend b
backend b
  server s1 127.0.0.1:$BACKEND_PORT
CONF
haproxy -f "$WORK/haproxy.cfg" & HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)
wait_port $HAPROXY_PORT

# Two ringhost nodes.
"$BIN" tls init --dir "$WORK/certs" --cluster bench >/dev/null
for n in n1 n2; do "$BIN" tls issue --dir "$WORK/certs" --node $n >/dev/null; done
start_node() { # name [seed]
  local seed=()
  [ -n "${2:-}" ] && seed=(--seed "$2")
  RUST_LOG=warn nohup "$BIN" node --name "$1" --data-dir "$WORK/$1" --certs "$WORK/certs" \
    --mesh 127.0.0.1:0 "${seed[@]}" --pool-size 256M --http 127.0.0.1:0 ${NODE_ARGS:-} \
    >/dev/null 2>"$WORK/$1.log" &
  NODE_PIDS+=($!)
  for _ in $(seq 1 200); do [ -f "$WORK/$1/ready.json" ] && return 0; sleep 0.05; done
  echo "$1 did not start:" >&2; tail -5 "$WORK/$1.log" >&2; exit 1
}
start_node n1
start_node n2 "$(json "$WORK/n1/ready.json" "v['mesh']")"
for _ in $(seq 1 100); do
  "$BIN" status --json --data-dir "$WORK/n1" | grep -o '"state":"alive"' | wc -l | grep -qx 2 && break
  sleep 0.1
done
declare -A NODE_PID=([n1]=${NODE_PIDS[0]} [n2]=${NODE_PIDS[1]})
declare -A NODE_PORT
for n in n1 n2; do NODE_PORT[$n]=$(json "$WORK/$n/ready.json" "v['http'][0].split(':')[1]"); done

# The static site, and the command site running nginx.
mkdir -p "$WORK/static-site" "$WORK/empty-site"
cp "$WORK/www/index.html" "$WORK/static-site/"
"$BIN" site create bench --domain bench.test --replicas 1 --data-dir "$WORK/n1" >/dev/null
"$BIN" site push bench "$WORK/static-site" --data-dir "$WORK/n1" >/dev/null
"$BIN" site create proxied --domain proxied.test --replicas 1 --runtime command \
  --cmd "sed s/@PORT@/\$PORT/ $WORK/site-nginx/nginx.tmpl > $WORK/site-nginx/nginx.conf && exec nginx -c $WORK/site-nginx/nginx.conf" \
  --data-dir "$WORK/n1" >/dev/null
master_of() { "$BIN" site show "$1" --json --data-dir "$WORK/n1" | python3 -c "import json,sys; print(json.load(sys.stdin)['master'])"; }
other_of() { [ "$1" = n1 ] && echo n2 || echo n1; }
SM=$(master_of bench); SO=$(other_of "$SM")
PM=$(master_of proxied); PO=$(other_of "$PM")
for host_port in "bench.test ${NODE_PORT[$SO]}" "proxied.test ${NODE_PORT[$PO]}"; do
  set -- $host_port
  for _ in $(seq 1 100); do
    curl -sf -H "Host: $1" "http://127.0.0.1:$2/" -o /dev/null && break
    sleep 0.1
  done
  curl -sf -H "Host: $1" "http://127.0.0.1:$2/" -o /dev/null \
    || { echo "$1 does not answer through port $2" >&2; tail -20 "$WORK"/n*.log >&2; exit 1; }
done
echo "static site master: $SM; command (nginx) site master: $PM" >&2

source "$(dirname "${BASH_SOURCE[0]}")/wrk-reps.sh"
BOTH="${NODE_PID[n1]} ${NODE_PID[n2]}"
declare -A CPU_PIDS=([direct]="" [haproxy]="$HAPROXY_PID"
  [ringhost-master]="${NODE_PID[$SM]}" [ringhost-other]="$BOTH"
  [rh-proxy-master]="${NODE_PID[$PM]}" [rh-proxy-other]="$BOTH")
declare -A URL=([direct]="127.0.0.1:$BACKEND_PORT" [haproxy]="127.0.0.1:$HAPROXY_PORT"
  [ringhost-master]="127.0.0.1:${NODE_PORT[$SM]}" [ringhost-other]="127.0.0.1:${NODE_PORT[$SO]}"
  [rh-proxy-master]="127.0.0.1:${NODE_PORT[$PM]}" [rh-proxy-other]="127.0.0.1:${NODE_PORT[$PO]}")
declare -A HOST=([direct]=bench.test [haproxy]=bench.test [ringhost-master]=bench.test
  [ringhost-other]=bench.test [rh-proxy-master]=proxied.test [rh-proxy-other]=proxied.test)
ORDER=(${TARGETS:-direct haproxy ringhost-master ringhost-other rh-proxy-master rh-proxy-other})
[[ " ${ORDER[*]} " == *" haproxy "* ]] || ORDER=(haproxy "${ORDER[@]}")  # the reference
run_reps
summarize
echo "ringhost-*: static site served by ringhost; rh-proxy-*: ringhost forwarding to nginx (a command site);"
echo "*-other: through the non-master node, QUIC tunnel over the mesh; CPU counts both nodes."
