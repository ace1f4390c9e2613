#!/usr/bin/env bash
# Shows that a change leaves the simulator's behaviour alone: builds the
# release `ringhost-sim` of BASE (default: the parent commit, HEAD~1) and of
# the working tree, runs the same seeds with both and compares the trace
# hash of every seed. Exit 0: every hash is the same; 1: one differs.
#
#   sim/same-traces.sh                 HEAD~1 against the working tree
#   sim/same-traces.sh main~3          another base
#   sim/same-traces.sh HEAD~1 --seeds 1..=40 --duration 2m
#
# The default runs are the CI sweep's shape (20 nodes, 20 sites, writes,
# crashes, partitions, bridges and loss) on 12 seeds of 90 simulated
# seconds, plus 4 membership-only seeds with every fault kind: ≈ 2 min on
# 2 cores. The base is built in a temporary git worktree with its own
# target dir (target/same-traces), so the first run also builds the
# dependencies once. Extra arguments after BASE replace the sites runs'
# seeds or shape (later arguments override earlier ones).
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-HEAD~1}"
shift || true

base_rev="$(git rev-parse --verify "$base^{commit}")"
tree="$(mktemp -d)"
cleanup() { git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"; }
trap cleanup EXIT
git worktree add --detach "$tree" "$base_rev" >/dev/null
echo "base $base = ${base_rev:0:12}; building both simulators"
base_target="$PWD/target/same-traces"
(cd "$tree" && cargo build --quiet --release --locked -p sim --bin ringhost-sim --target-dir "$base_target")
cargo build --quiet --release --locked -p sim --bin ringhost-sim
target_dir="${CARGO_TARGET_DIR:-target}"
new="$target_dir/release/ringhost-sim"
old="$base_target/release/ringhost-sim"
jobs="$(nproc)"

runs=(
    "--seeds 1..=12 --nodes 20 --sites 20 --write-rate 10 --duration 90s --faults crash,partition,bridge,loss --fault-gap 12s $*"
    "--seeds 1..=4 --nodes 20 --sites 0 --duration 5m --faults all --fault-gap 4s"
)
status=0
for args in "${runs[@]}"; do
    echo "+ ringhost-sim $args"
    # shellcheck disable=SC2086 # the arguments are words
    a="$("$old" $args --jobs "$jobs" 2>&1 | grep -E '^seed ' | awk '{print $2, $4}' || true)"
    # shellcheck disable=SC2086
    b="$("$new" $args --jobs "$jobs" 2>&1 | grep -E '^seed ' | awk '{print $2, $4}' || true)"
    if [ -z "$a" ]; then
        echo "the base simulator printed no seeds" >&2
        exit 2
    fi
    if [ "$a" == "$b" ]; then
        echo "same trace hashes for $(wc -l <<<"$a") seeds"
    else
        echo "TRACE HASHES DIFFER (seed, base hash | seed, new hash):"
        paste -d'|' <(echo "$a") <(echo "$b") | awk -F'|' '$1 != $2'
        status=1
    fi
done
exit "$status"
