#!/usr/bin/env bash
# The simulator sweep CI runs on every change, and the longer one to run by
# hand. Builds the release `ringhost-sim` once, runs the seeds on every core
# and exits non-zero on any broken invariant, after printing SIM_SEED=<n>
# and the command that replays it.
#
#   sim/ci-sweep.sh          CI: 200 seeds × 20 nodes × 10 simulated minutes,
#                            crashes, partitions and 1–5% loss episodes
#                            (≈ 4.5 min on 2 cores)
#   sim/ci-sweep.sh long     2000 seeds × 20 nodes × 30 simulated minutes with
#                            every fault kind, four times as often
#                            (≈ 3 h on 2 cores)
#
# Extra arguments go to ringhost-sim (e.g. `--jobs 8`, `--seeds 500..700`);
# later ones override earlier ones. Gossip timing is production's
# (model::GossipSettings).
set -euo pipefail

cd "$(dirname "$0")/.."
mode="ci"
if [[ "${1:-}" == "long" || "${1:-}" == "ci" ]]; then
    mode="$1"
    shift
fi

cargo build --release --locked -p sim --bin ringhost-sim
target_dir="${CARGO_TARGET_DIR:-target}"
sim="$target_dir/release/ringhost-sim"
jobs="$(nproc)"

case "$mode" in
    ci)
        # One fault every 15 s on average: ≈ 15 crashes, 14 partitions and
        # 8 loss episodes per seed.
        args=(--seeds 1..=200 --nodes 20 --sites 200 --duration 10m
              --faults crash,partition,loss --fault-gap 15s)
        ;;
    long)
        args=(--seeds 1..=2000 --nodes 20 --sites 200 --duration 30m
              --faults all --fault-gap 4s)
        ;;
esac

echo "+ ringhost-sim ${args[*]} --jobs $jobs $*"
# The binary's exit status is the sweep's: 0 all held, 1 an invariant broke,
# 2 an error.
exec "$sim" "${args[@]}" --jobs "$jobs" "$@"
