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

# CPU ticks (user+system) of processes, from /proc.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
HZ=$(getconf CLK_TCK)

declare -A CPU_PIDS=([direct]="" [haproxy]="$HAPROXY_PID" [ringhost-master]="$MASTER_PID" [ringhost-other]="$OTHER_PID $MASTER_PID")
declare -A PORTS=([direct]=$BACKEND_PORT [haproxy]=$HAPROXY_PORT [ringhost-master]=$MASTER_PORT [ringhost-other]=$OTHER_PORT)
ORDER=(direct haproxy ringhost-master ringhost-other)
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
echo "backend: $BACKEND; wrk -t2 -c64 -d$DURATION --latency; $REPS interleaved repetitions" >&2
for rep in $(seq 1 "$REPS"); do
  for t in "${ORDER[@]}"; do
    before=0; [ -n "${CPU_PIDS[$t]}" ] && before=$(ticks ${CPU_PIDS[$t]})
    out=$(wrk -t2 -c64 -d"$DURATION" --latency -H 'Host: bench.test' "http://127.0.0.1:${PORTS[$t]}/")
    after=0; [ -n "${CPU_PIDS[$t]}" ] && after=$(ticks ${CPU_PIDS[$t]})
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$rps" "$p99" "$(( after - before ))" "$reqs" >> "$RESULTS"
    echo "rep $rep $t: $rps req/s p99 $p99 $errs" >&2
  done
done

python3 - "$RESULTS" "$HZ" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
hz = int(sys.argv[2])
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
by = {}
for t, rep, rps, p99, ticks, reqs in rows:
    by.setdefault(t, []).append((float(rps), ms(p99), int(ticks) / hz, int(reqs)))
med = {t: (statistics.median(r for r, *_ in v), statistics.median(p for _, p, *_ in v),
           statistics.median(c / n * 1e6 for _, _, c, n in v)) for t, v in by.items()}
hap = med["haproxy"][0]
print(f"{'target':<16} {'req/s':>9} {'vs HAProxy':>10} {'p99 ms':>7} {'proxy CPU/req':>14}")
for t in ["direct", "haproxy", "ringhost-master", "ringhost-other"]:
    rps, p99, cpu = med[t]
    cpu_s = "-" if t == "direct" else f"{cpu:.1f} us"
    print(f"{t:<16} {rps:>9.0f} {rps / hap:>9.2f}x {p99:>7.2f} {cpu_s:>14}")
print("ringhost-other: tunnel over plain TCP (stand-in for QUIC); CPU counts both engine instances")
PY
