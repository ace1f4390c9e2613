#!/usr/bin/env bash
# The main job of the README: builds ringhost, starts a local 3-node cluster
# on loopback (mesh ports 7001-7003, HTTP 8081-8083, TLS passthrough
# 8441-8443), prints its status, creates a sample static site (hello.demo)
# and prints how to reach it through every node.
#
#   scripts/demo.sh         start (or restart) the cluster
#   scripts/demo.sh stop    stop it (SIGTERM: the nodes leave politely)
#
# Everything lives in $RINGHOST_DEMO_DIR (default /tmp/ringhost-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${RINGHOST_DEMO_DIR:-/tmp/ringhost-demo}

stop() {
    for pidfile in "$dir"/n*/pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    done
}

if [ "${1:-}" = stop ]; then
    stop
    echo "demo cluster stopped"
    exit 0
fi

source scripts/setup.sh
cargo build --release --locked --bin ringhost
bin=$PWD/target/release/ringhost
stop
mkdir -p "$dir"
if [ ! -f "$dir/certs/ca.pem" ]; then
    "$bin" tls init --dir "$dir/certs" --cluster demo
fi
for n in n1 n2 n3; do
    [ -f "$dir/certs/$n.pem" ] || "$bin" tls issue --dir "$dir/certs" --node "$n"
done
for i in 1 2 3; do
    mkdir -p "$dir/n$i"
    rm -f "$dir/n$i/ready.json"
    nohup "$bin" node --name "n$i" --data-dir "$dir/n$i" --certs "$dir/certs" \
        --mesh "127.0.0.1:700$i" --seed 127.0.0.1:7001 \
        --http "127.0.0.1:808$i" --https "127.0.0.1:844$i" \
        >"$dir/n$i/log" 2>&1 &
    echo $! >"$dir/n$i/pid"
done
for i in 1 2 3; do
    for _ in $(seq 1 100); do [ -f "$dir/n$i/ready.json" ] && break; sleep 0.1; done
    [ -f "$dir/n$i/ready.json" ] || { echo "n$i did not start; see $dir/n$i/log" >&2; tail -5 "$dir/n$i/log" >&2; exit 1; }
done
# Wait for gossip to converge (every node sees 3 alive), then show it.
for _ in $(seq 1 50); do
    "$bin" status --data-dir "$dir/n3" --json | grep -o '"state":"alive"' | wc -l | grep -qx 3 && break
    sleep 0.1
done
"$bin" status --data-dir "$dir/n1"

# A sample static site: created once (it survives restarts), content pushed
# every time.
mkdir -p "$dir/hello-site"
cat >"$dir/hello-site/index.html" <<HTML
<!doctype html>
<title>hello from ringhost</title>
<h1>Hello from ringhost</h1>
<p>Served by the site's master, reached through any node.</p>
HTML
if [ ! -f "$dir/hello-created" ]; then
    "$bin" site create hello --domain hello.demo --data-dir "$dir/n1"
    touch "$dir/hello-created"
fi
"$bin" site push hello "$dir/hello-site" --data-dir "$dir/n2"
# Wait until every node routes the site (bounded).
for i in 1 2 3; do
    for _ in $(seq 1 50); do
        curl -s -o /dev/null -w '%{http_code}' --resolve "hello.demo:808$i:127.0.0.1" \
            "http://hello.demo:808$i/" | grep -qx 200 && break
        sleep 0.1
    done
done
echo
echo "The sample site hello.demo answers through every node:"
for i in 1 2 3; do
    echo "  curl --resolve hello.demo:808$i:127.0.0.1 http://hello.demo:808$i/    # via n$i"
done
cat <<MSG

Three nodes run on 127.0.0.1:7001-7003 (logs in $dir/n*/log).
  $bin status --data-dir $dir/n2          # the view from n2
  $bin site list --data-dir $dir/n1       # sites, masters and copies
  kill -9 \$(cat $dir/n3/pid)                 # crash n3, then look again
  scripts/demo.sh stop                           # stop the cluster
MSG
