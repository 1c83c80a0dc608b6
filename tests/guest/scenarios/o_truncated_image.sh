# o: the image is truncated under a running daemon (`truncate -s 0`, as a user or a full-disk clean-up might). A
# cached range then has no bytes behind it: an O_DIRECT read of it fails with EIO (the daemon's copy into the request
# meets the missing page: EFAULT, not SIGBUS), the daemon keeps running, uncached ranges are still fetched from the
# source and read back right (twice), the image is never written again (a write would extend it and turn the
# truncated cached ranges into holes that read as zeros), `list` shows the cache failed, and the truncated range
# keeps failing with EIO, never zeros, without killing anyone.
. /scenarios/lib.sh

src=/tmp/o-src.iso
cache=/tmp/o-cache
cp "$ISO" "$src"
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
pid="$(pidof blkcache)" || fail "no blkcache daemon running"
# Cache the first 2 MiB, then take the image's bytes away.
expect_same_range "$dev" "$src" 0 $((2 * 1024 * 1024))
must truncate -s 0 "$(cache_image "$cache")"
# read_truncated SKIP: an O_DIRECT read of 64 KiB block SKIP fails with EIO, within 30 s (a daemon killed by SIGBUS
# leaves the device waiting for recovery: the read would hang).
read_truncated() {
    out="$(timeout -s KILL 30 dd if="$dev" of=/dev/null bs=65536 skip="$1" count=1 iflag=direct 2>&1)"
    rc=$?
    [ $rc -eq 137 ] && fail "an O_DIRECT read of a truncated cached range hung (the daemon died?)"
    [ $rc -eq 0 ] && fail "an O_DIRECT read of a truncated cached range succeeded"
    case "$out" in *"Input/output error"*) ;; *) fail "a read of a truncated cached range failed with '$out', not EIO" ;; esac
}
read_truncated 16
kill -0 "$pid" 2> /dev/null || fail "the daemon died reading a truncated image"
read_truncated 20
kill -0 "$pid" 2> /dev/null || fail "the daemon died after the truncated range was read again"
note "cached ranges after truncation: EIO; daemon $pid alive"
# Other data still reads right (from the source: the cache refuses to write into a truncated image), twice.
expect_same_range "$dev" "$src" $((4 * 1024 * 1024)) 131072
expect_same_range "$dev" "$src" $((4 * 1024 * 1024)) 131072
expect_eq "image size after misses (a write would have extended it)" "$(stat -c %s "$(cache_image "$cache")")" 0
read_truncated 16
kill -0 "$pid" 2> /dev/null || fail "the daemon died after the truncation"
wait_for 10 sh -c "blkcache list | grep '$dev' | grep -q 'cache failed'"
must blkcache del "$dev"
expect_eq "errors counted by the daemon (three failed reads of truncated bytes)" \
    "$(daemon_counter "$cache/daemon.log" errors)" 3
exit 0
