#!/usr/bin/env bash
# Installs what ringhost's demo and tests need on Debian, and starts the
# zfs-fuse daemon when the kernel has no ZFS. Safe to run again.
# Sourced by demo.sh and test.sh; not meant to be run alone.
set -euo pipefail

need_apt=()
command -v zfs >/dev/null 2>&1 || need_apt+=(zfs-fuse)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
if [ "${RINGHOST_BENCH_TOOLS:-0}" = 1 ]; then
    command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
    command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust with rustup (the toolchain in rust-toolchain.toml is used)" >&2
    exit 1
fi

# ZFS: a kernel module (OpenZFS) or the userspace zfs-fuse daemon.
if ! [ -e /dev/zfs ] || ! zpool list >/dev/null 2>&1; then
    if command -v zfs-fuse >/dev/null 2>&1 && ! pgrep -x zfs-fuse >/dev/null; then
        [ -e /dev/fuse ] || { modprobe fuse 2>/dev/null || true; }
        echo "setup: starting zfs-fuse" >&2
        zfs-fuse
        for _ in $(seq 1 50); do
            zpool list >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
fi
zpool list >/dev/null 2>&1 || echo "setup: warning: ZFS is not usable here (zpool list fails)" >&2
