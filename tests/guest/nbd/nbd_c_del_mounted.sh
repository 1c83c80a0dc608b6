# nbd c: `blkcache del` of a mounted /dev/nbdN returns promptly (the timeout only turns a hang into a failure), the
# daemon is gone, reads of the mounted file system then fail without hanging, umount works, and the map keeps what
# was read; a new add on the same cache serves it again.
. /scenarios/lib.sh

cache=/tmp/nc-cache
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
name="${dev#/dev/}"
mkdir -p /mnt/nc
must mount -t iso9660 -o ro "$dev" /mnt/nc
must cat /mnt/nc/media/big-a.bin > /tmp/nc-big-a
t0=$(date +%s)
timeout -s KILL 60 blkcache del "$dev" || fail "blkcache del of a mounted device failed or hung ($?)"
note "del of the mounted $dev took $(($(date +%s) - t0)) s"
pidof blkcache > /dev/null && fail "a blkcache daemon is still running after del: $(pidof blkcache)"
timeout -s KILL 30 cat /mnt/nc/docs/readme.txt > /dev/null 2>&1
[ $? -eq 137 ] && fail "reading the mounted file system after del hung"
timeout -s KILL 30 umount /mnt/nc || timeout -s KILL 30 umount -l /mnt/nc || fail "umount after del failed or hung"
map="$(cache_map "$cache")" || exit 1
big=$(stat -c %s /tmp/nc-big-a)
[ "$(map_bytes "$map" +)" -ge "$big" ] || fail "mapfile saved $(map_bytes "$map" +) bytes, less than the $big read"
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
must mount -t iso9660 -o ro "$dev" /mnt/nc
cmp /mnt/nc/media/big-a.bin /tmp/nc-big-a || fail "file read after re-adding differs"
must umount /mnt/nc
must blkcache del "$dev"
exit 0
