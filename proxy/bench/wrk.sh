#!/usr/bin/env bash
# Proxy benchmark on loopback: wrk -t2 -c64 -d10s --latency, 1 KiB responses,
# keep-alive, five interleaved repetitions, medians, ratios to HAProxy (mode
# http) from the same run, and proxy CPU per request.
#
#   bash proxy/bench/wrk.sh            # from the workspace root
#   REPS=5 DURATION=10s bash proxy/bench/wrk.sh
#
# Targets:
#   direct         the backend itself
#   haproxy        HAProxy, mode http, keep-alive to the backend
#   ringhost-master  the proxy engine on the site's master (Local backend)
#   ringhost-other   a second engine instance that is not the master,
#                  forwarding through the tunnel seam implemented as plain TCP
#                  (proxy::testing::TcpTunnels), NOT the QUIC mesh: a stand-in
#                  until the daemon's QUIC tunnels can be benchmarked.
# The backend is nginx (if installable) serving a 1 KiB file, else the
# proxy's bench_backend example. wrk, the proxies and the backend share the
# machine's cores: compare ratios from one run, not absolute numbers.
set -euo pipefail

REPS=${REPS:-5}
DURATION=${DURATION:-10s}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d)
chmod 755 "$WORK"  # nginx workers run as an unprivileged user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need haproxy; then
  apt-get update -qq && apt-get install -y -qq wrk haproxy >/dev/null
fi
if ! need nginx; then
  (apt-get install -y -qq nginx-light >/dev/null 2>&1 || apt-get install -y -qq nginx >/dev/null 2>&1) || true
fi

(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -q -p proxy --examples)
EX="$TARGET_DIR/release/examples"

BACKEND_PORT=18081 HAPROXY_PORT=18082 MASTER_PORT=18083 OTHER_PORT=18084 TUNNEL_PORT=18085

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2; exit 1
}

# Backend.
if need nginx; then
  BACKEND=nginx
  mkdir -p "$WORK/www" "$WORK/nginx"
  head -c 1024 /dev/zero | tr '\0' x > "$WORK/www/index.html"
  cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$BACKEND_PORT; root $WORK/www; }
}
CONF
  nginx -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
else
  BACKEND=bench_backend
  "$EX/bench_backend" "127.0.0.1:$BACKEND_PORT" 1024 & PIDS+=($!)
fi
wait_port $BACKEND_PORT

# HAProxy, mode http, keep-alive to the backend.
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

# ringhost engine: the master (Local backend) and another node (Remote).
echo "bench bench.test tcp 127.0.0.1:$BACKEND_PORT" > "$WORK/master.routes"
echo "bench bench.test remote master" > "$WORK/other.routes"
"$EX/serve" --routes "$WORK/master.routes" --http "127.0.0.1:$MASTER_PORT" \
  --tunnel-listen "127.0.0.1:$TUNNEL_PORT" & MASTER_PID=$!; PIDS+=($MASTER_PID)
"$EX/serve" --routes "$WORK/other.routes" --http "127.0.0.1:$OTHER_PORT" \
  --peer "master=127.0.0.1:$TUNNEL_PORT" & OTHER_PID=$!; PIDS+=($OTHER_PID)
for p in $HAPROXY_PORT $MASTER_PORT $OTHER_PORT $TUNNEL_PORT; do wait_port $p; done
curl -sf -H 'Host: bench.test' "http://127.0.0.1:$OTHER_PORT/" -o /dev/null \
  || { echo "ringhost path does not answer" >&2; exit 1; }

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/wrk-reps.sh"
declare -A CPU_PIDS=([direct]="" [haproxy]="$HAPROXY_PID" [ringhost-master]="$MASTER_PID" [ringhost-other]="$OTHER_PID $MASTER_PID")
declare -A URL=([direct]=127.0.0.1:$BACKEND_PORT [haproxy]=127.0.0.1:$HAPROXY_PORT [ringhost-master]=127.0.0.1:$MASTER_PORT [ringhost-other]=127.0.0.1:$OTHER_PORT)
declare -A HOST=([direct]=bench.test [haproxy]=bench.test [ringhost-master]=bench.test [ringhost-other]=bench.test)
ORDER=(direct haproxy ringhost-master ringhost-other)
echo "backend: $BACKEND" >&2
run_reps
summarize
echo "ringhost-other: tunnel over plain TCP (stand-in for QUIC); CPU counts both engine instances"
