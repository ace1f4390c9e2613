#!/usr/bin/env bash
# The test command of the README, and what CI runs: installs what the tests
# need, then formatting, lints, every test (one release build, reused by the
# slow multi-process tests), a bounded simulator sweep, bounded fuzzing and
# the benchmarks, which print their figures.
set -euo pipefail
cd "$(dirname "$0")/.."
RINGHOST_BENCH_TOOLS=1 source scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --release --locked

if [ -x sim/ci-sweep.sh ]; then
    step "simulator sweep"
    sim/ci-sweep.sh
fi

step "fuzzing (bounded)"
CARGO_TARGET_DIR="$PWD/target/fuzz" proxy/fuzz/run.sh "${RINGHOST_FUZZ_SECONDS:-10}"

step "benchmarks"
cargo bench --locked --bench membership
