# w: blkcache fill /dev/ublkbN. A device served without --fill (the ISO behind a damage map: 4 bad sectors in the
# padding at its end, 40 ms per read); `blkcache fill DEV` makes its daemon fill it through the control socket
# while the mounted file system is read (the files match); `status DEV` is live meanwhile (the running fill, its
# map ahead of the saved one or equal); a second fill is refused; the fill ends like a standalone fill (nothing
# untried, exactly the damaged sectors bad, the image equals the ISO wherever '+'), and the live figure then
# equals the saved map's. Then /dev/sr0 served: `status /dev/sr0` and `fill /dev/sr0` reach the daemon serving
# the drive, whose cache ends equal to the ISO. `export DEV` writes the image as the daemon holds it.
. /scenarios/lib.sh

cache=/tmp/w-cache
damaged_copy w

dev="$(blk_add "$src" --cache "$cache" --test-mode "$damage" --test-latency 40 --sector-size $ss)" || exit 1
[ -S "$cache/control.sock" ] || fail "no control socket in $cache: $(ls -l "$cache" | tr '\n' ' ')"
expect_eq "control socket mode" "$(stat -c %a "$cache/control.sock")" 600

blkcache fill "$dev" --json > /tmp/w-fill.json 2> /tmp/w-fill.err &
fill_pid=$!
# The daemon has taken the fill once status says it runs.
i=0
until blkcache status "$dev" --json > /tmp/w-live.json && grep -q '"running":true' /tmp/w-live.json; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "status $dev never showed the fill running: $(cat /tmp/w-live.json /tmp/w-fill.err | tr '\n' ' ')"
    sleep 0.1
done
grep -q '"live":true' /tmp/w-live.json || fail "status $dev is not live: $(cat /tmp/w-live.json)"
blkcache fill "$dev" > /tmp/w-second.out 2>&1 && fail "a second fill while one runs was accepted"
grep -q "already running" /tmp/w-second.out || fail "second fill: $(cat /tmp/w-second.out)"
blkcache status "$dev" > /tmp/w-live.txt || fail "status $dev failed"
grep -q "fill running, started by blkcache fill" /tmp/w-live.txt || fail "status shows no running fill: $(cat /tmp/w-live.txt)"
note "$(grep -A1 'fill running' /tmp/w-live.txt | tail -n1)"
# Saved first: the live map is never behind it.
saved_rescued=$(map_bytes "$(cache_map "$cache")" +)
set -- $(status_json "$dev" rescued)
live_rescued=$1
[ -n "$live_rescued" ] || fail "no rescued bytes in $(cat /tmp/status.json)"
[ "$live_rescued" -ge "$saved_rescued" ] || fail "live rescued $live_rescued < saved $saved_rescued"
note "live: $live_rescued bytes rescued, saved map: $saved_rescued"

expect_files_match "$dev" /mnt/v
wait $fill_pid || fail "blkcache fill $dev failed: $(cat /tmp/w-fill.err /tmp/w-fill.json | tr '\n' ' ')"
grep -q '"outcome":"finished"' /tmp/w-fill.json || fail "fill did not finish: $(cat /tmp/w-fill.json)"
grep -q '"non_tried":0,' /tmp/w-fill.json || fail "fill left non-tried bytes: $(cat /tmp/w-fill.json)"
note "$(cat /tmp/w-fill.json)"

# The fill saved the map as it ended: the live figure and the saved map agree.
set -- $(status_json "$dev" rescued)
live_rescued=$1
map="$(cache_map "$cache")" || exit 1
expect_eq "live rescued bytes = saved map's" "$live_rescued" "$(map_bytes "$map" +)"
expect_eq "rescued bytes after the fill" "$live_rescued" $((size - 4 * ss))
# export DEVICE: the served cache's image as the daemon holds it, the bad sectors filled with zeros.
blkcache export "$dev" -o /tmp/w-export.iso --allow-incomplete --fill zero --json > /tmp/w-export.json ||
    fail "blkcache export $dev failed: $(cat /tmp/w-export.json)"
grep -q "\"unread\":$((4 * ss))," /tmp/w-export.json || fail "export of $dev: $(cat /tmp/w-export.json)"
expect_eq "exported bytes before the bad sectors" "$(head -c $((bad * ss)) /tmp/w-export.iso | sha256sum | cut -d' ' -f1)" \
    "$(head -c $((bad * ss)) "$ISO" | sha256sum | cut -d' ' -f1)"
rm -f /tmp/w-export.iso /tmp/w-export.iso.*

must blkcache del "$dev"
[ -e "$cache/control.sock" ] && fail "the control socket outlived its daemon"
blkcache status "$cache" > /tmp/w-saved.txt || fail "status $cache failed"
grep -q "saved map: no daemon serves this cache" /tmp/w-saved.txt || fail "status without a daemon: $(cat /tmp/w-saved.txt)"
set -- $(status_json "$map" non_tried)
expect_eq "non-tried bytes after the fill" "$1" 0
expect_eq "bad runs after the fill" "$(map_runs_of "$map" - | tr '\n' ';')" "$((bad * ss)) $((4 * ss));"
img="$(cache_image "$cache")" || exit 1
expect_cached_match "$map" "$img" "$ISO"

# The drive itself names the device over it: `status /dev/sr0` and `fill /dev/sr0` go to its daemon.
cache=/tmp/w-sr0
dev="$(blk_add /dev/sr0 --cache "$cache")" || exit 1
blkcache status /dev/sr0 --json > /tmp/w-sr0.json || fail "status /dev/sr0 failed"
grep -q '"live":true' /tmp/w-sr0.json || fail "status /dev/sr0 is not live: $(cat /tmp/w-sr0.json)"
blkcache fill /dev/sr0 --json > /tmp/w-sr0-fill.json 2> /tmp/w-sr0-fill.err \
    || fail "fill /dev/sr0: $(cat /tmp/w-sr0-fill.err /tmp/w-sr0-fill.json | tr '\n' ' ')"
grep -q "\"cache\":\"$cache\"" /tmp/w-sr0-fill.json || fail "fill /dev/sr0 did not fill $cache: $(cat /tmp/w-sr0-fill.json)"
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
expect_eq "rescued bytes of sr0 after the fill" "$(map_bytes "$map" +)" "$size"
img="$(cache_image "$cache")" || exit 1
must cmp "$img" "$ISO"
exit 0
