# g: `blkcache del` while the device is mounted: it returns promptly (bounded here by a generous timeout, only to
# turn a hang into a failure), a read of the dead mount that must reach the device (page cache dropped) fails with
# EIO instead of hanging, nothing hangs afterwards (umount, a new add), and the mapfile is saved with what was read.
. /scenarios/lib.sh

cache=/tmp/g-cache
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
mkdir -p /mnt/g
must mount -t iso9660 -o ro "$dev" /mnt/g
must cat /mnt/g/media/big-a.bin > /tmp/g-big-a
exec 3< /mnt/g/media/big-a.bin # kept open across del: read again below
timeout -s KILL 60 blkcache del "$dev" || fail "blkcache del of a mounted device failed or hung ($?)"
[ -b "$dev" ] && fail "$dev still exists after del"
pidof blkcache > /dev/null && fail "a blkcache daemon is still running after del: $(pidof blkcache)"
# Reads of the dead device fail, they do not hang. The file read before del is in the page cache, which would answer
# a read without the device: drop it first, so the read must reach the (deleted) device, and assert its error.
# (iso9660 takes no O_DIRECT opens, and after del a path lookup fails before any read: the file stays open across
# del, and dropping the cache is how its read is made to reach the device.)
drop_caches
out="$(timeout -s KILL 30 dd of=/dev/null bs=65536 <&3 2>&1)"
rc=$?
exec 3<&-
[ $rc -eq 137 ] && fail "reading the mounted file system after del hung"
[ $rc -eq 0 ] && fail "reading a file of the deleted device succeeded (served from where?): $out"
case "$out" in *"Input/output error"*) ;; *) fail "reading a file of the deleted device failed with '$out', not EIO" ;; esac
note "read after del: $(echo "$out" | tail -n1)"
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
