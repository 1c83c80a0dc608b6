# nbd a: on a kernel without ublk (Debian 12's own 6.1), `blkcache add /dev/sr0` attaches the kernel's nbd driver:
# /dev/nbdN, read-only, 2048-byte blocks, listed as nbd; a miss reaches the drive and a second read of it does not;
# the whole device equals the disc; its file system mounts with matching files; del disconnects and saves a full map.
. /scenarios/lib.sh

[ -e /dev/ublk-control ] && fail "this scenario is for kernels without ublk, but /dev/ublk-control exists"
cache=/tmp/na-cache
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
case "$dev" in /dev/nbd*) ;; *) fail "add gave $dev, not /dev/nbdN" ;; esac
name="${dev#/dev/}"
note "device $dev for /dev/sr0"
expect_eq "$name logical_block_size" "$(cat /sys/block/$name/queue/logical_block_size)" 2048
expect_eq "$name read-only" "$(cat /sys/block/$name/ro)" 1
expect_eq "$name size in bytes" "$(($(cat /sys/block/$name/size) * 512))" "$(stat -c %s "$ISO")"
blkcache list | grep -Eq "^$dev +nbd +live " || fail "blkcache list does not show $dev as a live nbd device: $(blkcache list)"

pos=$((3 * 1048576))
r0="$(dev_reads sr0)"
must dd if="$dev" of=/tmp/na-miss bs=2048 skip=$((pos / 2048)) count=64 iflag=direct status=none
# Whatever the miss set off on the drive (the engine's media-change probe) is done before the hit is counted.
sleep 1
r1="$(dev_reads sr0)"
[ "$r1" -gt "$r0" ] || fail "an O_DIRECT miss did not reach sr0 (reads $r0 -> $r1)"
dd if="$ISO" of=/tmp/na-ref bs=2048 skip=$((pos / 2048)) count=64 status=none
cmp /tmp/na-miss /tmp/na-ref || fail "data read through $dev differs from the image"
must dd if="$dev" of=/tmp/na-hit bs=2048 skip=$((pos / 2048)) count=64 iflag=direct status=none
expect_eq "sr0 reads for a second read of the same range (a hit)" "$(dev_reads sr0)" "$r1"
cmp /tmp/na-hit /tmp/na-ref || fail "hit data differs from the image"

cmp "$dev" "$ISO" || fail "$dev differs from the image"
expect_files_match "$dev" /mnt/na
must blkcache del "$dev"
[ -e "/sys/block/$name/pid" ] && fail "$dev is still connected after del"
pidof blkcache > /dev/null && fail "a blkcache daemon is still running after del: $(pidof blkcache)"
map="$(cache_map "$cache")" || exit 1
map_expect "$map" "0 $(stat -c %s "$ISO") +"
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
exit 0
