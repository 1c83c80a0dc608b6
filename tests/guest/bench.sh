#!/usr/bin/env bash
# Benchmark (not a test): in one guest boot, sequential 1 MiB and random 4 KiB reads, buffered and O_DIRECT, of a
# fully cached image through /dev/ublkbN and through the loop driver on the same file. Prints each figure and the
# ublk/loop ratio. Figures are under QEMU TCG (emulated CPU): compare the two columns, not absolute numbers.
# Usage: bench.sh [--mib N] [--rand-mib N] [run.sh options such as --no-build]
# Must never be run as part of the test suite (timing-dependent).
set -euo pipefail
. "$(dirname "$0")/common.sh"

mib=64 rand_mib=8 pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --mib) mib="$2"; shift ;;
        --rand-mib) rand_mib="$2"; shift ;;
        *) pass+=("$1") ;;
    esac
    shift
done
ensure_packages gcc libc6-dev
mkdir -p "$CACHE_DIR"
gcc -static -O2 -Wall -o "$CACHE_DIR/rdbench" "$GUEST_DIR/rdbench.c" || die "cannot build rdbench (gcc -static)"
scen="$CACHE_DIR/bench-guest.sh"
{ echo "BENCH_MIB=$mib"; echo "BENCH_RAND_MIB=$rand_mib"; cat "$GUEST_DIR/bench-guest.sh"; } > "$scen"
exec "$GUEST_DIR/run.sh" --extra-bin "$CACHE_DIR/rdbench" --scenario-timeout 1200 --timeout 1500 "${pass[@]}" "$scen"
