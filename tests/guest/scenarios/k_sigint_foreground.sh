# k: `blkcache add --foreground` stopped by SIGINT (Ctrl-C) and by SIGTERM. The process prints the device, serves
# until the signal, then exits 0 having saved the map and removed the device: the map's '+' bytes are exactly the
# partition scan's plus the ranges read in each session, and the image holds the source's bytes there. And Ctrl-C
# of a daemon-mode `add` before its device is ready leaves no device and no daemon.
. /scenarios/lib.sh

src=/tmp/k-src.iso
cache=/tmp/k-cache
cp "$ISO" "$src"

# fg_start: start a foreground blkcache in the background; sets fg (pid) and dev.
fg_start() {
    rm -f /tmp/k-out
    blkcache add "$src" --cache "$cache" --read-ahead off --foreground > /tmp/k-out 2> /tmp/k-err &
    fg=$!
    wait_for 60 grep -q '^/dev/ublkb' /tmp/k-out
    dev="$(cat /tmp/k-out)"
    [ -b "$dev" ] || fail "--foreground printed '$dev', not a block device"
    kill -0 "$fg" 2> /dev/null || fail "blkcache --foreground (pid $fg) is not running while $dev exists"
}

# fg_stop SIGNAL: send SIGNAL and check the process exits 0 after saving the map and removing the device.
fg_stop() {
    kill -"$1" "$fg" || fail "kill -$1 $fg"
    wait "$fg"
    rc=$?
    expect_eq "exit status of blkcache --foreground after SIG$1" "$rc" 0
    [ -b "$dev" ] && fail "$dev still exists after SIG$1"
    [ -e "/sys/block/${dev#/dev/}" ] && fail "/sys/block/${dev#/dev/} still exists after SIG$1"
    expect_eq "blkcache list after SIG$1" "$(blkcache list)" "no blkcache devices"
    tr -d '\033' < /tmp/k-err | grep -q "map saved" || fail "no 'map saved' on stderr after SIG$1: $(tail -n5 /tmp/k-err)"
    tr -d '\033' < /tmp/k-err | grep "stopping" | grep -q "SIG$1" || fail "stderr does not name SIG$1: $(tail -n5 /tmp/k-err)"
}

# Session 0: nothing read but the partition scan.
fg_start
fg_stop INT
map="$(cache_map "$cache")" || exit 1
img="$(cache_image "$cache")" || exit 1
base="$(map_bytes "$map" +)"
note "cached by the partition scan: $base bytes"

r1pos=$((2 * 1048576))
r1len=$((256 * 1024))
r2pos=$((4 * 1048576 + 65536))
r2len=65536
r3pos=$((5 * 1048576))
r3len=$((128 * 1024))
for r in "$r1pos $r1len" "$r2pos $r2len" "$r3pos $r3len"; do
    set -- $r
    expect_eq "cached bytes at $1 (+$2) before reading it" "$(map_bytes_in "$map" + $1 $2)" 0
done

# Session 1: two ranges, then Ctrl-C.
fg_start
expect_same_range "$dev" "$src" $r1pos $r1len
expect_same_range "$dev" "$src" $r2pos $r2len
fg_stop INT
expect_eq "cached bytes of range 1 after SIGINT" "$(map_bytes_in "$map" + $r1pos $r1len)" $r1len
expect_eq "cached bytes of range 2 after SIGINT" "$(map_bytes_in "$map" + $r2pos $r2len)" $r2len
expect_eq "cached bytes in all after SIGINT" "$(map_bytes "$map" +)" $((base + r1len + r2len))
expect_cached_match "$map" "$img" "$ISO"

# Session 2: one more range, then SIGTERM (what `del` and service managers send).
fg_start
expect_same_range "$dev" "$src" $r3pos $r3len
expect_same_range "$dev" "$src" $r1pos $r1len
fg_stop TERM
expect_eq "cached bytes of range 3 after SIGTERM" "$(map_bytes_in "$map" + $r3pos $r3len)" $r3len
expect_eq "cached bytes in all after SIGTERM" "$(map_bytes "$map" +)" $((base + r1len + r2len + r3len))
set -- $(status_json "$map" rescued)
expect_eq "blkcache status: rescued bytes" "$1" $((base + r1len + r2len + r3len))
expect_cached_match "$map" "$img" "$ISO"

# Ctrl-C of `add` (daemon mode) before its device is ready (a slow source: identifying and the partition scan take
# seconds): the daemon, finding nobody to report to, stops the device again; no device or daemon is left.
blkcache add "$src" --cache "$cache" --test-latency 1500 > /tmp/k-orphan.out 2>&1 &
adder=$!
sleep 0.5
# SIGKILL: the caller gone as after Ctrl-C (a background job of a script may ignore SIGINT).
kill -KILL "$adder" || fail "kill -KILL $adder"
wait "$adder"
no_blkcache_left() { [ "$(blkcache list)" = "no blkcache devices" ] && ! pidof blkcache; }
wait_for 30 no_blkcache_left
grep -q "caller of add is gone" "$cache/daemon.log" || fail "no 'caller of add is gone' in $cache/daemon.log"
exit 0
