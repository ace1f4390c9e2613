#!/usr/bin/env bash
# The simulator sweep CI runs on every change, and the longer one to run by
# hand. Builds the release `ringhost-sim` once, runs the seeds on every core
# and exits non-zero on any broken invariant, after printing SIM_SEED=<n>
# and the command that replays it.
#
#   sim/ci-sweep.sh          CI: 200 seeds × 20 nodes × 10 simulated minutes,
#                            crashes, partitions and 1–5% loss episodes, gossip
#                            only (≈ 4.5 min on 2 cores)
#   sim/ci-sweep.sh sites    40 seeds × 20 nodes × 20 sites × 2 simulated
#                            minutes with model::Node, disks and clients
#                            (≈ 2 min on 2 cores). Not in CI yet: seeds 11 and
#                            31 still find model bugs (a busy master does not
#                            step down at once; a replicated write lost after
#                            one crash).
#   sim/ci-sweep.sh sites-full  the issue's site sweep: 200 seeds × 20 nodes ×
#                            200 sites × 10 simulated minutes (≈ 3.5 min of
#                            wall time per seed, ≈ 6 h on 2 cores: two thirds
#                            of it in model::Node::plan, which scans every
#                            site and every gossip key on every event)
#   sim/ci-sweep.sh long     2000 seeds × 20 nodes × 30 simulated minutes with
#                            every fault kind, four times as often, gossip only
#                            (≈ 3 h on 2 cores)
#
# Extra arguments go to ringhost-sim (e.g. `--jobs 8`, `--seeds 500..700`);
# later ones override earlier ones. Gossip timing is production's
# (model::GossipSettings).
set -euo pipefail

cd "$(dirname "$0")/.."
mode="ci"
if [[ "${1:-}" =~ ^(ci|long|sites|sites-full)$ ]]; then
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
        args=(--seeds 1..=200 --nodes 20 --sites 0 --duration 10m
              --faults crash,partition,loss --fault-gap 15s)
        ;;
    sites)
        args=(--seeds 1..=40 --nodes 20 --sites 20 --write-rate 10
              --duration 2m --faults crash,partition,loss --fault-gap 15s)
        ;;
    sites-full)
        args=(--seeds 1..=200 --nodes 20 --sites 200 --duration 10m
              --faults crash,partition,loss --fault-gap 15s)
        ;;
    long)
        args=(--seeds 1..=2000 --nodes 20 --sites 0 --duration 30m
              --faults all --fault-gap 4s)
        ;;
esac

# The binary's exit status is the sweep's: 0 all held, 1 an invariant broke,
# 2 an error.
echo "+ ringhost-sim ${args[*]} --jobs $jobs $*"
exec "$sim" "${args[@]}" --jobs "$jobs" "$@"
