# Guest side of bench.sh (run as a scenario named "bench-guest"). TCG figures: compare, do not quote absolutes.
# (a) cached reads: a fully cached image through /dev/ublkbN versus the kernel loop driver on the same image file,
#     sequential 1 MiB and random 4 KiB, buffered and O_DIRECT, one reader and one reader per guest CPU;
# (b) first reads: an uncached disc through a fresh blkcache versus the drive read directly, on a scsi_debug CD whose
#     every command takes BENCH_NDELAY_MS ms, sequential O_DIRECT reads of 1 MiB and 128 KiB;
# (c) CPU seconds of the daemon per GiB served from the cache (over all of (a)'s ublk runs).
# Cached rows also show CPU time per read call (summed over all rounds): the whole guest's busy time through ublk and
# through loop, and the daemon's own: where a per-read cost, not waiting, bounds a row. The random rows run a second
# time on a device with --read-ahead off (rows "-ra-off"), to show what read-ahead's check on every hit costs.
# BENCH_MIB (image size), BENCH_RAND_MIB (bytes per random run), BENCH_DISC_MIB, BENCH_NDELAY_MS and BENCH_ROUNDS
# (cached figures: best of this many runs) may be set by preceding lines. Every figure is printed beside its baseline from the same boot, with the ratio.
. /scenarios/lib.sh

MIB="${BENCH_MIB:-64}"
RAND_MIB="${BENCH_RAND_MIB:-16}"
DISC_MIB="${BENCH_DISC_MIB:-40}"
NDELAY_MS="${BENCH_NDELAY_MS:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
CPUS=$(nproc)
results=/tmp/bench.results
: > "$results"

# readers N MODE TARGET BS TOTAL IO: N concurrent rdbench processes (different seeds), TOTAL bytes each; prints the
# summed MiB/s.
readers() {
    r_i=0
    while [ $r_i -lt "$1" ]; do
        rdbench "$2" "$3" "$4" "$5" "$6" $((88172645463325252 + r_i * 7919)) > "/tmp/rd.$r_i" &
        r_i=$((r_i + 1))
    done
    wait || true
    r_i=0
    while [ $r_i -lt "$1" ]; do
        grep -q mib_s= "/tmp/rd.$r_i" || fail "rdbench $2 $3 $4 $6 (reader $r_i) failed"
        r_i=$((r_i + 1))
    done
    cat /tmp/rd.* | sed 's/.*mib_s=\([0-9.]*\).*/\1/' | awk '{ s += $1 } END { printf "%.1f\n", s }'
    rm -f /tmp/rd.*
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# sys_ticks PID: the part of cpu_ticks spent in the kernel (system calls, ublk's task work).
sys_ticks() { awk '{ print $15 }' "/proc/$1/stat"; }
# busy_ticks: CPU ticks the whole guest spent not idle (every CPU, every process and the kernel's own threads).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# (a) cached reads.
img=/tmp/bench.img
must dd if=/dev/urandom of="$img" bs=1M count="$MIB" status=none
dev="$(blk_add "$img" --cache /tmp/bench-cache)" || exit 1
must dd if="$dev" of=/dev/null bs=1M status=none # fill the cache
map="$(cache_map /tmp/bench-cache)" || exit 1
blkcache del "$dev" || fail "blkcache del $dev"
expect_eq "cached bytes after a full read" "$(map_bytes "$map" +)" $((MIB * 1048576))
must losetup /dev/loop0 "$img"
ublk_ticks=0
ublk_bytes=0
# cached LABEL MODES [ADD-OPTIONS]: the cached rows of MODES (seq, rand) through a device added with ADD-OPTIONS,
# each beside loop; besides MiB/s, the guest's busy CPU per read call for both and the daemon's own.
cached() {
    local label="$1" modes="$2" io mode bs total n ublk loop round target t0 s0 b0 mibs reads ub lb dt ds
    shift 2
    dev="$(blk_add "$img" --cache /tmp/bench-cache "$@")" || exit 1
    pid="$(pidof blkcache)" || fail "no daemon"
    queues="$(ls /sys/block/${dev#/dev/}/mq | wc -l)"
    for io in buffered direct; do
        for mode in $modes; do
            if [ $mode = seq ]; then bs=1048576; total=$((MIB * 1048576)); else bs=4096; total=$((RAND_MIB * 1048576)); fi
            for n in 1 "$CPUS"; do
                # Best of ROUNDS, ublk and loop alternating: the host's other load only ever slows a run down.
                ublk=0 loop=0 round=0 ub=0 lb=0 dt=0 ds=0
                reads=$((ROUNDS * n * total / bs))
                while [ $round -lt "$ROUNDS" ]; do
                    for target in "$dev" /dev/loop0; do
                        drop_caches
                        t0=$(cpu_ticks "$pid")
                        s0=$(sys_ticks "$pid")
                        b0=$(busy_ticks)
                        mibs="$(readers "$n" "$mode" "$target" "$bs" "$total" "$io")" || exit 1
                        if [ "$target" = "$dev" ]; then
                            ub=$((ub + $(busy_ticks) - b0))
                            dt=$((dt + $(cpu_ticks "$pid") - t0))
                            ds=$((ds + $(sys_ticks "$pid") - s0))
                            ublk="$(echo "$ublk $mibs" | awk '{ print ($2 > $1) ? $2 : $1 }')"
                        else
                            lb=$((lb + $(busy_ticks) - b0))
                            loop="$(echo "$loop $mibs" | awk '{ print ($2 > $1) ? $2 : $1 }')"
                        fi
                    done
                    round=$((round + 1))
                done
                ublk_ticks=$((ublk_ticks + dt))
                ublk_bytes=$((ublk_bytes + ROUNDS * n * total))
                echo "cached $mode-$((bs / 1024))k$label $io x$n $ublk $loop $ub $lb $dt $reads $ds" >> "$results"
            done
        done
    done
    blkcache del "$dev" || fail "blkcache del $dev"
}
cached "" "seq rand"
# The same random rows without read-ahead: what its stream check on every hit costs small random reads.
cached "-ra-off" rand --read-ahead off
losetup -d /dev/loop0

# (b) first reads of an uncached disc: the drive directly, then through a fresh blkcache, same request sizes.
ndelay=$((NDELAY_MS * 1000000))
sdev="$(scsi_debug_load dev_size_mb="$DISC_MIB" sector_size=2048 ptype=5 ndelay=$ndelay)" || exit 1
total=$((DISC_MIB * 1048576))
for bs in 1048576 131072; do
    drop_caches
    direct="$(readers 1 seq "/dev/$sdev" $bs $total direct)" || exit 1
    rm -rf /tmp/bench-disc
    dev="$(blk_add "/dev/$sdev" --cache /tmp/bench-disc)" || exit 1
    drop_caches
    first="$(readers 1 seq "$dev" $bs $total direct)" || exit 1
    blkcache del "$dev" || fail "blkcache del $dev"
    echo "first seq-$((bs / 1024))k direct x1 $first $direct" >> "$results"
done
scsi_debug_unload

echo "BENCH guest kernel: $(cat /proc/cmdline | tr ' ' '\n' | grep -v '^blkcache\.' | tr '\n' ' ')"
echo "BENCH CPU flaws the guest kernel works around: meltdown: $(cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null); spectre_v2: $(cat /sys/devices/system/cpu/vulnerabilities/spectre_v2 2>/dev/null)"
echo "BENCH summary (TCG, 2 emulated CPUs; ${MIB} MiB image on tmpfs, $queues ublk queues; drive: scsi_debug CD, ${DISC_MIB} MiB, ${NDELAY_MS} ms per command)"
echo "BENCH (a) cached: ublk / loop on the same image file (best of $ROUNDS each); (b) first read: blkcache / the drive directly; target >= 0.90"
awk -v hz="$(getconf CLK_TCK 2> /dev/null || echo 100)" '
    BEGIN { printf "BENCH %-6s %-17s %-9s %-3s %10s %10s %6s   %s\n", "what", "pattern", "io", "n", "MiB/s", "baseline", "ratio", "CPU us per read: guest ublk / loop, daemon (its kernel part)" }
    {
        r = $6 > 0 ? $5 / $6 : 0
        cpu = NF >= 11 ? sprintf("   %6.0f / %6.0f, %6.0f (%.0f)", $7 / hz * 1e6 / $10, $8 / hz * 1e6 / $10, $9 / hz * 1e6 / $10, $11 / hz * 1e6 / $10) : ""
        printf "BENCH %-6s %-17s %-9s %-3s %10.1f %10.1f %6.2f%s%s\n", $1, $2, $3, $4, $5, $6, r, cpu, r < 0.9 ? "  (below target)" : ""
    }' "$results"
awk -v t="$ublk_ticks" -v b="$ublk_bytes" -v hz="$(getconf CLK_TCK 2> /dev/null || echo 100)" \
    'BEGIN { printf "BENCH (c) daemon CPU per GiB served from cache: %.2f s (%d ticks over %.2f GiB)\n", t / hz / (b / 1073741824), t, b / 1073741824 }'
exit 0
