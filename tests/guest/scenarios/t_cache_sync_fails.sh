# t: the cache on ext2 on a scsi_debug disk whose writes start failing while blkcache serves (debugfs error
# injection: every WRITE(10) answered CHECK CONDITION, MEDIUM ERROR, write error). The kernel's writeback of the
# image fails, the daemon's next fdatasync reports it once, and blkcache must not retry it into a map that lies
# (Linux's next fdatasync returns 0). Asserted: every byte read equals the ISO, before and after; `list` shows
# `cache failed` (and --json `cache_state` `failed`); after `del` (whose final save would be that lying retry),
# with the disk healthy again and the filesystem remounted (page cache gone), the map still claims what was saved
# before the failure, claims nothing read after it, and each `+` run of the image on disk equals the ISO.
# guest-timeout: 240
. /scenarios/lib.sh

src=/tmp/t-src.iso
disk=/tmp/t-disk
cp "$ISO" "$src"
size=$(stat -c %s "$src")
[ -d /sys/kernel/debug/scsi_debug ] || mount -t debugfs debugfs /sys/kernel/debug
sd="$(scsi_debug_load dev_size_mb=32 sector_size=512 delay=0)" || exit 1
hctl="$(basename "$(readlink -f "/sys/block/$sd/device")")"
errors="/sys/kernel/debug/scsi_debug/$hctl/error"
[ -e "$errors" ] || fail "no scsi_debug error injection file $errors"
must mke2fs -q "/dev/$sd"
mkdir -p "$disk"
must mount -t ext2 "/dev/$sd" "$disk"
cache="$disk/cache"

# A: the first MiB, read and saved (on stop) while the disk is healthy.
a_len=1048576
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
must expect_same_range "$dev" "$src" 0 $a_len
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
expect_eq "bytes of A in the map saved before the failure" "$(map_bytes_in "$map" + 0 $a_len)" $a_len

# B: 1 MiB more in a new session, cached while the disk still takes writes into the page cache; then the disk
# fails its writes and the writeback of B's pages (forced by sync) fails.
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
b_pos=$((3 * 1048576))
b_len=1048576
must expect_same_range "$dev" "$src" $b_pos $b_len
echo "2 1 0x2a 0 0 0x2 0x3 0xc 0x0" > "$errors" || fail "cannot arm write errors in $errors"
sync || true
echo "- 2 0x2a" > "$errors" || fail "cannot disarm write errors in $errors"
note "write errors armed during one sync: $(dmesg | grep -c -i 'error' ) kernel error lines"

# The daemon's next save (every 30 s) meets the reported writeback error.
wait_for 45 sh -c "blkcache list | grep '$dev' | grep -q 'cache failed'"
blkcache list
blkcache list --json | grep -q '"cache_state": "failed"' \
    || fail "list --json does not say failed: $(blkcache list --json | tr '\n' ' ')"
drop_caches
cmp "$dev" "$src" || fail "$dev differs from $src after the cache failed"
must blkcache del "$dev"

# What is on the disk now, without the page cache.
must umount "$disk"
must mount -t ext2 "/dev/$sd" "$disk"
img="$(cache_image "$cache")" || exit 1
expect_eq "bytes of A in the map" "$(map_bytes_in "$map" + 0 $a_len)" $a_len
expect_eq "bytes of B in the map (lost with the failed writeback)" "$(map_bytes_in "$map" + $b_pos $b_len)" 0
expect_cached_match "$map" "$img" "$src"
note "cached after the failure: $(map_bytes "$map" +) of $size bytes"
must umount "$disk"
exit 0
