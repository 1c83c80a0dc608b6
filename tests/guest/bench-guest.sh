# Guest side of bench.sh (run as a scenario named "bench-guest"): read throughput of a fully cached image through
# /dev/ublkbN versus the kernel loop driver on the same image file. TCG figures: compare, do not quote absolutes.
# BENCH_MIB (image size) and BENCH_RAND_MIB (bytes read by the random runs) may be set by a preceding line.
. /scenarios/lib.sh

MIB="${BENCH_MIB:-64}"
RAND_MIB="${BENCH_RAND_MIB:-8}"
img=/tmp/bench.img
must dd if=/dev/urandom of="$img" bs=1M count="$MIB" status=none
dev="$(blk_add "$img" --cache /tmp/bench-cache)" || exit 1
must dd if="$dev" of=/dev/null bs=1M status=none # fill the cache
map="$(cache_map /tmp/bench-cache)" || exit 1
blkcache del "$dev" || fail "blkcache del $dev"
expect_eq "cached bytes after a full read" "$(map_bytes "$map" +)" $((MIB * 1048576))
dev="$(blk_add "$img" --cache /tmp/bench-cache)" || exit 1
must losetup /dev/loop0 "$img"

results=/tmp/bench.results
: > "$results"
for io in buffered direct; do
    for mode in seq rand; do
        if [ $mode = seq ]; then bs=1048576; total=$((MIB * 1048576)); else bs=4096; total=$((RAND_MIB * 1048576)); fi
        for target in "$dev" /dev/loop0; do
            name=ublk
            [ "$target" = /dev/loop0 ] && name=loop
            drop_caches
            out="$(rdbench "$mode" "$target" "$bs" "$total" "$io")" || fail "rdbench $mode $target $io failed"
            echo "BENCH target=$name $out"
            echo "$name $mode $io $(echo "$out" | sed 's/.*mib_s=\([0-9.]*\).*iops=\([0-9]*\).*/\1 \2/')" >> "$results"
        done
    done
done
echo "BENCH summary (TCG, ${MIB} MiB image on tmpfs, 2 emulated CPUs; ratio = ublk / loop)"
awk '
    { key = $2 " " $3; v[$1, key] = $4; iops[$1, key] = $5; if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
    END {
        printf "BENCH %-16s %12s %12s %8s\n", "mode io", "ublk MiB/s", "loop MiB/s", "ratio"
        for (i = 0; i < n; i++) {
            k = order[i]
            r = v["loop", k] > 0 ? v["ublk", k] / v["loop", k] : 0
            printf "BENCH %-16s %12.1f %12.1f %8.2f\n", k, v["ublk", k], v["loop", k], r
        }
    }' "$results"
losetup -d /dev/loop0
blkcache del "$dev" || fail "blkcache del $dev"
exit 0
