# A killed nbd daemon (kill -9; nbd has no recovery) while a reader holds its device (so the kernel keeps it
# connected, and with udev not watching nbd devices nothing tells udev it lost its daemon): systemd restarts the unit
# (Restart=on-abnormal), the new daemon serves the disc through another /dev/nbdN from the same cache, and
# /dev/blkcache/sr0 and `list --json` name the new device; the old one, kept connected by its reader, loses the name
# at once and gets no byte; once the reader closes it, it disconnects and leaves `list`.
# kernel: 6.1
# boot-disc: none
# install: scenario

nbd_unwatched
note "disc A served; its first MiB read"
old="$(serve "$ISO_A")"
read_direct "$LINK" 0 1048576 || fail "read of A through $LINK failed"
cacheA="$(cache_of "$ISO_A")" || fail "no cache for disc A"
# The map is saved every 30 s: what was read since the last save is read again after a kill (by design).
wait_for 40 map_saved "$cacheA" 1048575
pid="$(unit_prop "$UNIT" MainPID)"
restarts=$(unit_restarts)
exec 3< "$old"

note "kill -9 of the daemon ($pid) while a reader holds $old"
kill -9 "$pid"
wait_for 60 sh -c "[ \$(systemctl show -P NRestarts $UNIT) -gt $restarts ]"
wait_for 60 unit_is "$UNIT" active
wait_for 40 sh -c "readlink -f $LINK | grep -qv '^$old\$'"
wait_for 20 link_serves "$ISO_A"
udevadm settle
new="$(served_dev)"
note "$LINK -> $new"
[ "$new" != "$old" ] || fail "$LINK still names the killed daemon's $old"
udevadm info -q symlink "$old" | grep -q blkcache && fail "$old keeps a blkcache name: $(udevadm info -q symlink "$old")"
expect_eq "list --json state of $old" \
    "$(blkcache list --json | jq -r --arg d "$old" '.[] | select(.device == $d) | .state')" dead
expect_eq "list --json device of the running daemon of /dev/sr0" \
    "$(blkcache list --json | jq -r '.[] | select(.source == "/dev/sr0" and .daemon_running) | .device')" "$new"
expect_eq "A's cache directory" "$(cache_of "$ISO_A")" "$cacheA"
before=$(sr0_reads)
read_direct "$LINK" 0 1048576 || fail "read of A's first MiB through $new failed"
expect_eq "sr0 reads for A's first MiB, saved in the map before the kill" "$(sr0_reads)" "$before"
cmp "$LINK" "$ISO_A" || fail "$LINK ($new) differs from disc A"

note "the old device gets no byte; closed, it disconnects and leaves list"
rm -f /tmp/old.bin
if dd of=/tmp/old.bin bs=2048 count=1 skip=1600 iflag=direct status=none <&3 2> /tmp/old.err; then
    [ "$(stat -c %s /tmp/old.bin)" -eq 0 ] || fail "the killed daemon's $old delivered $(stat -c %s /tmp/old.bin) bytes"
fi
exec 3<&-
wait_for 20 sh -c "[ ! -e /sys/block/${old#/dev/}/pid ]"
expect_eq "list --json devices of /dev/sr0" "$(listed_dev /dev/sr0)" "$new"
