#!/usr/bin/env bash
# Idle-connection benchmark with a real ringhost node (release build) on
# loopback: opens IDLE idle TCP connections to the node's HTTP port (half
# of them after one keep-alive request, half without sending a byte) and
# TLS_IDLE connections to its HTTPS port that never send a ClientHello;
# prints the node's RSS before, while they are held and after the head
# timeout, the RSS per connection, and shows that the node still answers
# requests on new connections meanwhile.
#
#   scripts/bench-idle.sh                  # as root (ZFS), from anywhere
#   IDLE=10000 TLS_IDLE=5000 scripts/bench-idle.sh
#
# Bounds measured here (proxy/src/server.rs): a connection that sends no
# complete request head (no ClientHello on HTTPS) is answered 408 / closed
# after the head timeout (10 s); an idle keep-alive connection after 60 s;
# and client connections are capped by `max_connections` (default 16384,
# fitted to three quarters of the open-file limit), past which new clients
# wait in the listen backlog.
set -euo pipefail

IDLE=${IDLE:-10000}
TLS_IDLE=${TLS_IDLE:-$((IDLE / 2))}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/ringhost-idle.XXXXXX)
NODE_PID=
cleanup() {
  if [ -n "$NODE_PID" ]; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Both the node and the client hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
need=$((IDLE + TLS_IDLE + 200))
if [ "$need" -gt $((FDS * 3 / 4)) ]; then
  # The node keeps a quarter of its descriptors for itself.
  TLS_IDLE=$((FDS * 3 / 4 - IDLE - 200))
  [ "$TLS_IDLE" -lt 0 ] && TLS_IDLE=0
  echo "open-file limit $FDS: TLS_IDLE lowered to $TLS_IDLE" >&2
fi

pgrep -x zfs-fuse >/dev/null || ! command -v zfs-fuse >/dev/null || zfs-fuse
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -q -p ringhost --bin ringhost)
BIN="$TARGET_DIR/release/ringhost"
json() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

"$BIN" tls init --dir "$WORK/certs" --cluster idle >/dev/null
"$BIN" tls issue --dir "$WORK/certs" --node n1 >/dev/null
RUST_LOG=warn "$BIN" node --name n1 --data-dir "$WORK/n1" --certs "$WORK/certs" \
  --mesh 127.0.0.1:0 --pool-size 256M --http 127.0.0.1:0 --https 127.0.0.1:0 \
  >/dev/null 2>"$WORK/n1.log" &
NODE_PID=$!
for _ in $(seq 1 200); do [ -f "$WORK/n1/ready.json" ] && break; sleep 0.05; done
[ -f "$WORK/n1/ready.json" ] || { echo "node did not start" >&2; tail "$WORK/n1.log" >&2; exit 1; }
HTTP=$(json "$WORK/n1/ready.json" "v['http'][0]")
HTTPS=$(json "$WORK/n1/ready.json" "v['https'][0]")
mkdir -p "$WORK/site"
head -c 1024 /dev/zero | tr '\0' x > "$WORK/site/index.html"
"$BIN" site create idle --domain idle.test --replicas 1 --data-dir "$WORK/n1" >/dev/null
"$BIN" site push idle "$WORK/site" --data-dir "$WORK/n1" >/dev/null
for _ in $(seq 1 100); do
  curl -sf -H "Host: idle.test" "http://$HTTP/" -o /dev/null && break
  sleep 0.1
done

python3 - "$NODE_PID" "$HTTP" "$HTTPS" "$IDLE" "$TLS_IDLE" <<'PY'
import os, selectors, socket, statistics, sys, time

pid, http, https, idle, tls_idle = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def addr(a):
    h, p = a.rsplit(":", 1)
    return (h, int(p))
HTTP, HTTPS = addr(http), addr(https)
REQ = b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n"

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))

def probe(n=20):
    """n requests, each on a new connection: (statuses, latencies in ms)."""
    st, lat = [], []
    for _ in range(n):
        t = time.monotonic()
        s = socket.create_connection(HTTP, timeout=5)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: idle.test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            st.append(int(data.split(b" ", 2)[1]) if data else 0)
        except OSError:
            st.append(0)
        finally:
            s.close()
        lat.append((time.monotonic() - t) * 1e3)
    return st, lat

def open_many(target, n):
    socks, sel = [], selectors.DefaultSelector()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(target)
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    pending = n
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            sel.unregister(key.fileobj)
            pending -= 1
    sel.close()
    return socks, pending

def report(what, base_rss, base_fds, held):
    r, f = rss_kib(), fds()
    st, lat = probe()
    ok = sum(1 for s in st if s == 200)
    per = (r - base_rss) / held if held else 0
    print(f"{what}: node RSS {r / 1024:.1f} MiB ({(r - base_rss) / 1024:+.1f} MiB"
          + (f", {per:.2f} KiB per held connection" if held else "")
          + f"), node fds {f} ({f - base_fds:+d}); {ok}/{len(st)} requests on new connections answered 200,"
          + f" p50 {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms")

base_rss, base_fds = rss_kib(), fds()
st, lat = probe()
print(f"before: node RSS {base_rss / 1024:.1f} MiB, node fds {base_fds}; {sum(1 for s in st if s == 200)}/{len(st)} requests answered 200, p50 {statistics.median(lat):.1f} ms")
t0 = time.monotonic()
silent, p1 = open_many(HTTP, idle - idle // 2)
kept, p2 = open_many(HTTP, idle // 2)
# One keep-alive request on each of these; the answer is read, then idle.
for s in kept:
    s.setblocking(True)
    s.settimeout(10)
    s.sendall(REQ)
for s in kept:
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
tls, p3 = open_many(HTTPS, tls_idle)
opened = time.monotonic() - t0
held = len(silent) + len(kept) + len(tls)
print(f"opened {len(silent)} silent HTTP + {len(kept)} keep-alive HTTP (after one request) + {len(tls)} silent HTTPS connections in {opened:.1f} s ({p1 + p2 + p3} connects pending)")
time.sleep(1)
report(f"holding {held}", base_rss, base_fds, held)
# Past the head timeout (10 s from accept): the silent ones were answered
# 408 (HTTP) or closed (HTTPS); the keep-alive ones stay (60 s idle).
time.sleep(max(0.0, 12 - (time.monotonic() - t0)))
closed = 0
for s in silent + tls:
    s.setblocking(False)
    try:
        b = s.recv(65536)
        closed += 1 if (b == b"" or b.startswith(b"HTTP/1.1 408")) else 0
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"after the 10 s head timeout: {closed} of {len(silent) + len(tls)} silent connections were closed by the node (408 on HTTP)")
# RSS stays near its peak from here: the allocator keeps freed memory for
# reuse rather than returning it to the system.
report(f"holding {len(kept)} keep-alive", base_rss, base_fds, 0)
for s in silent + kept + tls:
    s.close()
time.sleep(1)
report("all closed", base_rss, base_fds, 0)
PY
