# c: the emulated CD drive (/dev/sr0, virtio-scsi) as the source. The ublk device has 2048-byte logical blocks;
# an O_DIRECT miss reaches the drive and returns the image's bytes; the same read again is a hit (the drive's read
# counter does not move); the whole device equals the image and its file system mounts with matching files. The
# drive is recorded in the cache with its sysfs vendor and model (QEMU's scsi-cd), shown by list and status.
. /scenarios/lib.sh

cache=/tmp/c-cache
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
name="${dev#/dev/}"
note "device $dev for /dev/sr0"
expect_eq "$name logical_block_size" "$(cat /sys/block/$name/queue/logical_block_size)" 2048
expect_eq "$name size in bytes" "$(($(cat /sys/block/$name/size) * 512))" "$(stat -c %s "$ISO")"

pos=$((3 * 1048576))
r0="$(dev_reads sr0)"
must dd if="$dev" of=/tmp/c-miss bs=2048 skip=$((pos / 2048)) count=64 iflag=direct status=none
r1="$(dev_reads sr0)"
[ "$r1" -gt "$r0" ] || fail "an O_DIRECT miss did not reach sr0 (reads $r0 -> $r1)"
dd if="$ISO" of=/tmp/c-ref bs=2048 skip=$((pos / 2048)) count=64 status=none
cmp /tmp/c-miss /tmp/c-ref || fail "data read through $dev differs from the image"
must dd if="$dev" of=/tmp/c-hit bs=2048 skip=$((pos / 2048)) count=64 iflag=direct status=none
r2="$(dev_reads sr0)"
expect_eq "sr0 reads for a second read of the same range (a hit)" "$r2" "$r1"
cmp /tmp/c-hit /tmp/c-ref || fail "hit data differs from the image"
note "miss: $((r1 - r0)) drive reads; hit: 0"

cmp "$dev" "$ISO" || fail "$dev differs from the image"
expect_files_match "$dev" /mnt/c
list="$(blkcache list --json)"
case "$list" in
*'"kind": "drive"'*'"path": "/dev/sr0"'*'"vendor": "QEMU"'*'"model": "QEMU CD-ROM"'*) ;;
*) fail "blkcache list --json shows no drive record of sr0 as QEMU CD-ROM: $list" ;;
esac
must blkcache del "$dev"
status="$(blkcache status "$cache")"
case "$status" in
*"read by: QEMU QEMU CD-ROM"*"at /dev/sr0"*) ;;
*) fail "blkcache status $cache does not show the drive: $status" ;;
esac
note "drive: $(echo "$status" | grep 'read by')"
map="$(cache_map "$cache")" || exit 1
map_expect "$map" "0 $(stat -c %s "$ISO") +"
exit 0
