# nbd d: kill -9 of the daemon behind /dev/nbdN (no recovery on nbd), then a fresh add on the same cache: every byte
# the map had saved is still cached (the new daemon fetches only the rest), and the device serves the disc exactly.
. /scenarios/lib.sh

cache=/tmp/nd-cache
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
mkdir -p /mnt/nd
must mount -t iso9660 -o ro "$dev" /mnt/nd
(cd /mnt/nd && sha256sum -c -s "$DATA/manifest.sha256") || fail "file checksums differ"
must umount /mnt/nd
# The daemon saves the map every 30 s: wait for one save, then kill it without a chance to save again.
map="$(cache_map "$cache")" || exit 1
i=0
until [ "$(map_bytes "$map" +)" -gt 0 ]; do
    i=$((i + 1))
    [ $i -gt 300 ] && fail "no periodic map save within 60 s"
    sleep 0.2
done
saved="$(map_bytes "$map" +)"
cp "$map" /tmp/nd-map-before
pids="$(pidof blkcache)"
note "killing daemon $pids (kill -9) with $saved bytes in the saved map"
kill -9 $pids
sleep 1
timeout -s KILL 30 dd if="$dev" of=/dev/null bs=2048 count=1 iflag=direct 2>/dev/null
[ $? -eq 137 ] && fail "a read of $dev after kill -9 hung"

dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
map_runs /tmp/nd-map-before | awk '$3 == "+" { print $1, $2 }' | while read -r pos len; do
    must dd if="$dev" of=/tmp/nd-got bs=2048 skip=$((pos / 2048)) count=$((len / 2048)) iflag=direct status=none
    dd if="$ISO" of=/tmp/nd-ref bs=2048 skip=$((pos / 2048)) count=$((len / 2048)) status=none
    cmp /tmp/nd-got /tmp/nd-ref || fail "cached range $pos+$len differs after the fresh add"
done || exit 1
cmp "$dev" "$ISO" || fail "$dev differs from the image after the fresh add"
must blkcache del "$dev"
# The new daemon fetched from the drive only what the saved map did not hold (the saved end is on a 64 KiB
# boundary, so its fetches cover exactly the rest): no cached byte was fetched again.
size=$(stat -c %s "$ISO")
expect_eq "bytes the new daemon read from the drive" "$(daemon_counter "$cache/daemon.log" media_bytes)" \
    $((size - saved))
map_expect "$map" "0 $size +"
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
exit 0
