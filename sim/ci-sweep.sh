#!/usr/bin/env bash
# The simulator sweep CI runs on every change, and the longer one to run by
# hand. Builds the release `ringhost-sim` once, runs the seeds on every core
# and exits non-zero on any broken invariant, after printing SIM_SEED=<n>
# and the command that replays it.
#
#   sim/ci-sweep.sh          CI: the site sweep, 200 seeds × 20 nodes × 20
#                            sites × 90 simulated seconds, every node running
#                            model::Node over a simulated disk, clients
#                            writing 10/s, one fault every 12 s on average:
#                            crashes, partitions (two-way, and one-way in
#                            either direction), bridges (two sides cut apart,
#                            a few nodes hearing both) and 1–5% loss episodes.
#                            18 min 12 s of CPU, 9 min 8 s of wall time on 2
#                            idle cores (1157 faults; failover p50 3.11 s);
#                            it was 4 min 12 s before the lease's beats
#   sim/ci-sweep.sh sites-ci the same (its name before it became CI's)
#   sim/ci-sweep.sh gossip   200 seeds × 20 nodes × 10 simulated minutes,
#                            membership only, the same fault kinds (≈ 2.6 s of
#                            CPU per seed: ≈ 4.5 min on 2 cores); CI's sweep
#                            until the site sweep replaced it
#   sim/ci-sweep.sh sites    40 seeds × 20 nodes × 20 sites × 2 simulated
#                            minutes, one fault every 15 s (≈ 3 s of CPU per
#                            seed)
#   sim/ci-sweep.sh sites-full  the issue's site sweep: 200 seeds × 20 nodes ×
#                            200 sites × 10 simulated minutes. ≈ 235 s of CPU
#                            per seed (seed 1), ≈ 6.5 h on 2 cores. Where it
#                            goes (perf, 150 simulated s): model::Node::handle
#                            30% (diffing each new view against the last,
#                            planning the sites that changed), rebuilding
#                            views from chitchat state 19% (20 members × 30–40
#                            site keys per node, several times a second),
#                            chitchat itself 25% (its live-node watch clones
#                            every node state each round; deltas of site keys
#                            are zstd-compressed with a fresh context per
#                            message), the sim's checks and drivers ≈ 15%
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
if [[ "${1:-}" =~ ^(ci|sites-ci|gossip|long|sites|sites-full)$ ]]; then
    mode="$1"
    shift
fi

cargo build --release --locked -p sim --bin ringhost-sim
target_dir="${CARGO_TARGET_DIR:-target}"
sim="$target_dir/release/ringhost-sim"
jobs="$(nproc)"

case "$mode" in
    ci | sites-ci)
        # One fault every 12 s on average: ≈ 7 per seed.
        args=(--seeds 1..=200 --nodes 20 --sites 20 --write-rate 10
              --duration 90s --faults crash,partition,bridge,loss --fault-gap 12s)
        ;;
    gossip)
        # One fault every 15 s on average: ≈ 15 crashes, 14 partitions and
        # bridges, 8 loss episodes per seed.
        args=(--seeds 1..=200 --nodes 20 --sites 0 --duration 10m
              --faults crash,partition,bridge,loss --fault-gap 15s)
        ;;
    sites)
        args=(--seeds 1..=40 --nodes 20 --sites 20 --write-rate 10
              --duration 2m --faults crash,partition,bridge,loss --fault-gap 15s)
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
