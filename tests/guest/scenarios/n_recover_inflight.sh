# n: kill -9 of the daemon while a slow miss is in flight, on a 2-queue device (`--queues 2 --depth 16
# --read-size 128k --test-latency 1000`). The device waits without a daemon ("no daemon" in `blkcache list`);
# `blkcache recover` with no argument re-attaches one; the pending read then completes with the right bytes, and
# the map holds it. `recover` of a device whose daemon runs is refused.
. /scenarios/lib.sh

src=/tmp/n-src.iso
cache=/tmp/n-cache
cp "$ISO" "$src"
mpos=$((3 * 1024 * 1024))
mlen=$((64 * 1024))

dev="$(blk_add "$src" --cache "$cache" --queues 2 --depth 16 --read-size 128k --test-latency 1000)" || exit 1
name="${dev#/dev/}"
expect_eq "hardware queues of $name" "$(ls /sys/block/$name/mq | tr '\n' ' ')" "0 1 "
pid="$(blkcache list --json | tr -d ' \n' | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')"
kill -0 "$pid" 2> /dev/null || fail "daemon pid '$pid' from blkcache list --json is not running"

dd if="$dev" of=/tmp/n-miss bs=$mlen skip=$((mpos / mlen)) count=1 iflag=direct status=none &
reader=$!
wait_for 10 reads_in_flight "$name"
kill -9 "$pid"
wait_for 10 sh -c "blkcache list | grep -q '$dev .*(no daemon)'"
kill -0 "$reader" 2> /dev/null || fail "the pending read ended when the daemon was killed"
note "daemon $pid killed with a read in flight: $(blkcache list | grep "$dev")"

out="$(timeout 60 blkcache recover 2>&1)" || fail "blkcache recover: $out"
case "$out" in *"recovered $dev"*) ;; *) fail "blkcache recover said '$out', not 'recovered $dev'" ;; esac
wait "$reader" || fail "the read pending across the daemon's death failed"
range_of "$src" $mpos $mlen /tmp/n-miss.ref
cmp /tmp/n-miss /tmp/n-miss.ref > /dev/null || fail "the read pending across the daemon's death returned wrong bytes"
expect_same_range "$dev" "$src" $((mpos + mlen)) $mlen # the rest of the 128 KiB fetch: a hit
why="$(expect_fails_with "recover of a live device" "nothing to recover" blkcache recover "$dev")" || exit 1
note "recover of a live device: $why"
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
expect_eq "cached bytes of the 128 KiB fetch" "$(map_bytes_in "$map" + $mpos $((2 * mlen)))" $((2 * mlen))
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
expect_eq "media reads of the recovered daemon" "$(daemon_counter "$cache/daemon.log" media_reads)" 1
exit 0
