#!/usr/bin/env bash
# The test command of the README, and what CI runs: installs what the tests
# need, then formatting, lints, every test (one release build, reused by the
# slow multi-process tests), a bounded simulator sweep, bounded fuzzing and
# the membership benchmark, which prints its figures. Every step has a time
# limit, so a hang fails the run instead of stalling it.
#
# The heavier benchmarks are run by hand (they print their figures):
#   cargo bench --bench replication      replication throughput and lag (ZFS)
#   cargo bench -p sim                   simulator speed at 20/100/300 nodes
#   proxy/bench/wrk.sh                   proxy req/s against HAProxy
set -euo pipefail
cd "$(dirname "$0")/.."
RINGHOST_BENCH_TOOLS=1 source scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lints"
timeout 1200 cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# Three tests at a time: the multi-process tests start whole clusters, and
# one zfs-fuse daemon serves every pool of the machine.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}" timeout 2700 \
    cargo test --workspace --release --locked

if [ -x sim/ci-sweep.sh ]; then
    step "simulator sweep"
    timeout 1200 sim/ci-sweep.sh
fi

step "fuzzing (bounded)"
CARGO_TARGET_DIR="$PWD/target/fuzz" timeout 900 proxy/fuzz/run.sh "${RINGHOST_FUZZ_SECONDS:-10}"

step "benchmarks"
timeout 600 cargo bench --locked --bench membership
# Failover on five namespace hosts: kill -9 of the master, 10 trials.
timeout 900 cargo bench --locked --bench failover
