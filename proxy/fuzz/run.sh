#!/usr/bin/env bash
# Fuzzes each decoder of the proxy crate for a bounded time and fails on the
# first crash, leak or timeout (the input is saved under artifacts/<target>/).
#
# usage: proxy/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 30
#   TARGET              default: all of http_request http_response chunked client_hello
#                       tunnel_header gossip_values
# The build lands in $CARGO_TARGET_DIR if set, else proxy/fuzz/target.
# Reproduce a crash: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-...
set -euo pipefail

secs=${1:-30}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "run.sh: seconds per target must be a positive integer, not '$secs'" >&2
    exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(http_request http_response chunked client_hello tunnel_header gossip_values)
fi

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, sancov passes)
# to rustc. RUSTC_BOOTSTRAP=1 lets the pinned stable toolchain
# (rust-toolchain.toml) accept them, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

target_dir=${CARGO_TARGET_DIR:-$here/target}
cargo fuzz build --target-dir "$target_dir"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "run.sh: fuzzing $t for ${secs}s" >&2
    # corpus/<t> gathers what this machine found; seeds/<t> (committed) holds
    # real captures so the run starts from valid messages.
    if ! cargo fuzz run --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "run.sh: FAILED: ${failed[*]} (inputs in $here/artifacts/)" >&2
    exit 1
fi
echo "run.sh: ${#targets[@]} targets fuzzed for ${secs}s each, no crash" >&2
