# p: a slow drive (a scsi_debug CD: 2048-byte sectors, CDROM ioctls, every SCSI command delayed 6 s) served with two
# queues. While an O_DIRECT miss is stuck on the drive, cached reads are answered at once (< 1 s, against >= 5 s for
# the miss), on the miss's queue (same CPU) and on the other one: nothing that waits on the drive (the media-change
# probe sends the drive commands too) runs on a queue thread. Then `blkcache del` with a slow miss in flight: the
# daemon spends less than a fifth of a busy loop's CPU time in the same window while it waits for that read to end.
. /scenarios/lib.sh

# Milliseconds since boot.
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# CPU time of PID so far, in clock ticks (utime + stime).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2> /dev/null; }

sdev="$(scsi_debug_load dev_size_mb=16 sector_size=2048 ptype=5 delay=0)" || exit 1
case "$sdev" in sr*) ;; *) fail "scsi_debug with ptype=5 made /dev/$sdev, not a CD drive" ;; esac
cache=/tmp/p-cache
dev="$(blk_add "/dev/$sdev" --cache "$cache" --queues 2 --depth 16 --read-ahead off)" || exit 1
name="${dev#/dev/}"
expect_eq "ublk hardware queues" "$(ls /sys/block/$name/mq | wc -l)" 2
# Cache the first MiB while the drive is fast.
must dd if="$dev" of=/tmp/p-cached bs=65536 count=16 iflag=direct status=none
# From now on every command the drive gets takes 6 s (delay is in jiffies; the guest kernel has HZ=250).
echo 1500 > /sys/bus/pseudo/drivers/scsi_debug/delay || fail "cannot set the scsi_debug delay"

t_miss=$(now_ms)
taskset -c 0 dd if="$dev" of=/tmp/p-miss bs=65536 skip=128 count=1 iflag=direct status=none &
miss=$!
wait_for 10 reads_in_flight "$name"
for cpu in 0 1; do
    t0=$(now_ms)
    taskset -c $cpu dd if="$dev" of=/tmp/p-hit bs=65536 skip=$((cpu * 4)) count=1 iflag=direct status=none \
        || fail "cached read on CPU $cpu failed"
    took=$(($(now_ms) - t0))
    note "cached read on CPU $cpu (queue $cpu) took ${took} ms while the miss was stuck"
    [ $took -lt 1000 ] || fail "a cached read on CPU $cpu took ${took} ms while a miss was stuck on the drive"
    kill -0 $miss 2> /dev/null || fail "the miss ended before the cached read on CPU $cpu: the drive is not slow"
done
wait $miss || fail "the slow miss failed"
miss_ms=$(($(now_ms) - t_miss))
note "the miss took ${miss_ms} ms"
[ $miss_ms -ge 5000 ] || fail "the miss took only ${miss_ms} ms: the drive was not slow, the test proves nothing"

# Stop with a slow miss in flight: the daemon waits for it without spinning. Its CPU time over the stop is compared
# with a busy loop's in the same window (under TCG on a loaded host, guest CPU ticks shrink with the host's share).
pid="$(pidof blkcache)" || fail "no daemon"
taskset -c 1 dd if="$dev" of=/dev/null bs=65536 skip=200 count=1 iflag=direct status=none 2> /dev/null &
wait_for 10 reads_in_flight "$name"
yes > /dev/null &
spinner=$!
spin0=$(cpu_ticks $spinner)
before=$(cpu_ticks "$pid")
(while [ -e "/proc/$pid" ]; do cpu_ticks "$pid" > /tmp/p-ticks.tmp && mv /tmp/p-ticks.tmp /tmp/p-ticks; sleep 0.2; done) &
t0=$(now_ms)
timeout -s KILL 60 blkcache del "$dev" || fail "del with a slow read in flight failed or hung"
wait_for 30 sh -c "! kill -0 $pid"
took=$(($(now_ms) - t0))
spun=$(($(cpu_ticks $spinner) - spin0))
kill $spinner
used=$(($(cat /tmp/p-ticks) - before))
note "del with a slow miss in flight: ${took} ms; daemon CPU $used ticks, a busy loop's $spun in the same window"
[ $((used * 5)) -lt "$spun" ] || fail "the daemon used $used clock ticks of CPU while stopping with a slow read in flight (a busy loop: $spun)"
wait
scsi_debug_unload
exit 0
