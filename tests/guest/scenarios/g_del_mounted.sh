# g: `blkcache del` while the device is mounted: it returns promptly (bounded here by a generous timeout, only to
# turn a hang into a failure), nothing hangs afterwards (umount, a new add), and the mapfile is saved with what was
# read.
. /scenarios/lib.sh

cache=/tmp/g-cache
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
mkdir -p /mnt/g
must mount -t iso9660 -o ro "$dev" /mnt/g
must cat /mnt/g/media/big-a.bin > /tmp/g-big-a
timeout -s KILL 60 blkcache del "$dev" || fail "blkcache del of a mounted device failed or hung ($?)"
[ -b "$dev" ] && fail "$dev still exists after del"
pidof blkcache > /dev/null && fail "a blkcache daemon is still running after del: $(pidof blkcache)"
# Reads of the dead device fail, they do not hang.
timeout -s KILL 30 cat /mnt/g/docs/readme.txt > /dev/null 2>&1
rc=$?
[ $rc -eq 137 ] && fail "reading the mounted file system after del hung"
timeout -s KILL 30 umount /mnt/g || timeout -s KILL 30 umount -l /mnt/g || fail "umount after del failed or hung"
map="$(cache_map "$cache")" || exit 1
big=$(stat -c %s /tmp/g-big-a)
[ "$(map_bytes "$map" +)" -ge "$big" ] || fail "mapfile saved $(map_bytes "$map" +) bytes, less than the $big read"
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
# The cache is usable again at once, and what was read is served from it.
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
must mount -t iso9660 -o ro "$dev" /mnt/g
cmp /mnt/g/media/big-a.bin /tmp/g-big-a || fail "file read after re-adding differs"
must umount /mnt/g
must blkcache del "$dev"
exit 0
