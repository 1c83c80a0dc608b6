#!/usr/bin/env bash
# Benchmark (not a test), in one guest boot (see bench-guest.sh): (a) a fully cached image read through /dev/ublkbN
# and through the loop driver on the same file (sequential 1 MiB and random 4 KiB, buffered and O_DIRECT, one reader
# and one per guest CPU); (b) the first read of an uncached disc through blkcache and the drive read directly (a
# scsi_debug CD with a per-command delay; sequential 1 MiB and 128 KiB); (c) the daemon's CPU seconds per GiB served
# from cache. Prints each figure beside its baseline and the ratio. Figures are under QEMU TCG (emulated CPU):
# compare the columns, not absolute numbers.
# Usage: bench.sh [--mib N] [--rand-mib N] [--disc-mib N] [--ndelay-ms N] [--rounds N] [run.sh options: --no-build]
# Must never be run as part of the test suite (timing-dependent).
set -euo pipefail
. "$(dirname "$0")/common.sh"

mib=64 rand_mib=16 disc_mib=40 ndelay_ms=2 rounds=3 pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --mib) mib="$2"; shift ;;
        --rand-mib) rand_mib="$2"; shift ;;
        --disc-mib) disc_mib="$2"; shift ;;
        --ndelay-ms) ndelay_ms="$2"; shift ;;
        --rounds) rounds="$2"; shift ;;
        *) pass+=("$1") ;;
    esac
    shift
done
ensure_packages gcc libc6-dev
mkdir -p "$CACHE_DIR"
gcc -static -O2 -Wall -o "$CACHE_DIR/rdbench" "$GUEST_DIR/rdbench.c" || die "cannot build rdbench (gcc -static)"
scen="$CACHE_DIR/bench-guest.sh"
{
    echo "BENCH_MIB=$mib"
    echo "BENCH_RAND_MIB=$rand_mib"
    echo "BENCH_DISC_MIB=$disc_mib"
    echo "BENCH_NDELAY_MS=$ndelay_ms"
    echo "BENCH_ROUNDS=$rounds"
    cat "$GUEST_DIR/bench-guest.sh"
} > "$scen"
exec "$GUEST_DIR/run.sh" --extra-bin "$CACHE_DIR/rdbench" --scenario-timeout 1200 --timeout 1500 "${pass[@]}" "$scen"
