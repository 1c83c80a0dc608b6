# nbd e: fill and live status through /dev/nbdN (Linux 6.1, no ublk). The ISO behind a damage map (4 bad sectors
# near its end, 20 ms per read) served by the kernel nbd driver: a read through the device shows in
# `status DEV` at once (live, before any save: the saved map has nothing yet); `fill DEV` makes the daemon fill
# through its control socket and ends finished with exactly the damaged sectors bad; the live figure then equals
# the saved map's.
. /scenarios/lib.sh

cache=/tmp/ne-cache
damaged_copy ne

dev="$(blk_add "$src" --cache "$cache" --test-mode "$damage" --test-latency 20 --sector-size $ss)" || exit 1
case "$dev" in /dev/nbd*) ;; *) fail "add gave $dev, not /dev/nbdN" ;; esac
map="$(cache_map "$cache")" || exit 1
saved0=$(map_bytes "$map" +)
set -- $(status_json "$dev" rescued)
before=$1
must dd if="$dev" of=/dev/null bs=65536 skip=32 count=4 iflag=direct status=none
set -- $(status_json "$dev" rescued)
# At least the read (the kernel's own probes of a new device may add some).
[ "$1" -ge $((before + 262144)) ] || fail "live rescued bytes $1 after a 256 KiB read, $before before"
grep -q '"live":true' /tmp/status.json || fail "status $dev is not live: $(cat /tmp/status.json)"
expect_eq "saved map's rescued bytes (no save yet)" "$(map_bytes "$map" +)" "$saved0"

blkcache fill "$dev" --json > /tmp/ne-fill.json 2> /tmp/ne-fill.err \
    || fail "blkcache fill $dev: $(cat /tmp/ne-fill.err /tmp/ne-fill.json | tr '\n' ' ')"
grep -q '"outcome":"finished"' /tmp/ne-fill.json || fail "fill did not finish: $(cat /tmp/ne-fill.json)"
note "$(cat /tmp/ne-fill.json)"
set -- $(status_json "$dev" rescued)
expect_eq "live rescued bytes = saved map's" "$1" "$(map_bytes "$map" +)"
expect_eq "rescued bytes after the fill" "$1" $((size - 4 * ss))
must blkcache del "$dev"
expect_eq "bad runs after the fill" "$(map_runs_of "$map" - | tr '\n' ';')" "$((bad * ss)) $((4 * ss));"
img="$(cache_image "$cache")" || exit 1
expect_cached_match "$map" "$img" "$ISO"
exit 0
