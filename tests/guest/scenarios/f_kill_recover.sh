# f: kill -9 of the daemon while its device is mounted and being read, then `blkcache recover`: the device comes
# back (user recovery), the reader continues, and every file still matches the host's checksums.
. /scenarios/lib.sh

cache=/tmp/f-cache
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
mkdir -p /mnt/f
must mount -t iso9660 -o ro "$dev" /mnt/f
pids="$(pidof blkcache)"
[ -n "$pids" ] || fail "no blkcache daemon process after add"
[ "$(echo $pids | wc -w)" -eq 1 ] || fail "expected one blkcache daemon, found: $pids"
# A reader that keeps going: whole-file checksums, in a loop, until told to stop.
(
    n=0
    while [ ! -e /tmp/f-stop ]; do
        (cd /mnt/f && sha256sum -c -s "$DATA/manifest.sha256") || { echo "round $n: checksums differ" > /tmp/f-bad; }
        echo 3 > /proc/sys/vm/drop_caches
        n=$((n + 1))
        echo $n > /tmp/f-rounds
    done
) &
reader=$!
sleep 1
note "killing daemon $pids (kill -9) while the reader runs"
kill -9 $pids
sleep 1
[ -b "$dev" ] || fail "$dev vanished after the daemon was killed (no user recovery?)"
rounds_at_kill="$(cat /tmp/f-rounds 2>/dev/null || echo 0)"
must timeout 60 blkcache recover "$dev"
newpid="$(pidof blkcache)"
[ -n "$newpid" ] || fail "no blkcache daemon after recover"
# Let the reader finish at least two more full rounds on the recovered device.
i=0
while [ "$(cat /tmp/f-rounds 2>/dev/null || echo 0)" -lt $((rounds_at_kill + 2)) ]; do
    i=$((i + 1))
    [ $i -gt 600 ] && fail "reader made no progress after recover (rounds: $(cat /tmp/f-rounds 2>/dev/null))"
    sleep 0.2
done
touch /tmp/f-stop
wait $reader
[ -e /tmp/f-bad ] && fail "reader saw wrong data: $(cat /tmp/f-bad)"
(cd /mnt/f && sha256sum -c -s "$DATA/manifest.sha256") || fail "file checksums differ after recover"
must umount /mnt/f
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
[ "$(map_bytes "$map" +)" -gt 0 ] || fail "nothing cached after recover"
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
exit 0
