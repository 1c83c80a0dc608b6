# v: sequential read-ahead through /dev/ublkbN. A scsi_debug CD (2048-byte sectors, 2 ms per command) read with
# O_DIRECT, 128 KiB at a time over 4 MiB: after the first few requests the daemon reads ahead of the reader, so its
# requests are hits or wait on a read-ahead already on the drive (the daemon's media reads other than read-ahead:
# at most 4 of 32 requests); every sector the drive delivered was cached once (the drive's sectors-read counter
# equals the bytes newly cached), the bytes read equal the drive's, and nothing was read beyond 1.25 windows
# (--read-ahead 1M) past the reader. The device's optimal I/O size is its largest request (512 KiB), so the kernel
# reads ahead 1 MiB for buffered readers (not its default 128 KiB).
. /scenarios/lib.sh

sdev="$(scsi_debug_load dev_size_mb=16 sector_size=2048 ptype=5 ndelay=2000000)" || exit 1
cache=/tmp/v-cache
# Session 0: what the kernel reads when the disk appears (partition scan), so it can be told apart.
dev="$(blk_add "/dev/$sdev" --cache "$cache" --read-ahead off)" || exit 1
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
pos=$((2 * 1048576))
len=$((4 * 1048576))
expect_eq "cached bytes of the region before" "$(map_bytes_in "$map" + $pos $len)" 0

dev="$(blk_add "/dev/$sdev" --cache "$cache" --read-ahead 1M)" || exit 1
q="/sys/block/${dev#/dev/}/queue"
expect_eq "optimal I/O size of $dev" "$(cat "$q/optimal_io_size")" 524288
expect_eq "kernel read-ahead (KiB) of $dev" "$(cat "$q/read_ahead_kb")" 1024
# The partition scan's reads are hits now, but they may be read ahead of: let the drive go quiet first.
quiet() { q0="$(dev_sectors "$sdev")"; sleep 1; [ "$(dev_sectors "$sdev")" = "$q0" ]; }
wait_for 20 quiet
s0="$(dev_sectors "$sdev")"
before="$(map_bytes_in "$map" + $pos $((16 * 1048576 - pos)))"
must dd if="$dev" of=/tmp/v-got bs=131072 skip=$((pos / 131072)) count=$((len / 131072)) iflag=direct status=none
must blkcache del "$dev" # waits for a read-ahead still on the drive
s1="$(dev_sectors "$sdev")"
log="$cache/daemon.log"
ahead="$(daemon_counter "$log" ahead_reads)" || exit 1
reads="$(daemon_counter "$log" media_reads)" || exit 1
# The region and everything after it: what this reader caused (the map before was saved by session 0).
cached=$(($(map_bytes_in "$map" + $pos $((16 * 1048576 - pos))) - before))
note "32 requests: $reads media reads, $ahead of them read-ahead; drive delivered $(((s1 - s0) * 512)) bytes; newly cached $cached"
[ "$ahead" -ge 1 ] || fail "no read-ahead for a sequential reader"
[ $((reads - ahead)) -le 4 ] || fail "$((reads - ahead)) of 32 sequential requests read the drive themselves"
expect_eq "bytes read from the drive vs bytes newly cached" "$(((s1 - s0) * 512))" "$cached"
expect_eq "cached bytes of the region" "$(map_bytes_in "$map" + $pos $len)" "$len"
end=$((pos + len))
past="$(map_bytes_in "$map" + $end $((16 * 1048576 - end)))"
[ "$past" -le $((5 * 1048576 / 4)) ] || fail "read ahead $past bytes past the reader (window 1 MiB)"
dd if="/dev/$sdev" of=/tmp/v-ref bs=131072 skip=$((pos / 131072)) count=$((len / 131072)) iflag=direct status=none
cmp /tmp/v-got /tmp/v-ref || fail "bytes read through $dev differ from the drive's"
scsi_debug_unload
exit 0
