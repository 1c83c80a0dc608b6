# A killed ublk daemon (kill -9) under systemd: the unit is restarted (Restart=on-abnormal) and the new daemon
# re-attaches to the same /dev/ublkbN (user recovery) instead of adding another, so a reader holding it goes on
# with the disc's bytes, /dev/blkcache/sr0 keeps naming it, and what was cached is not read from the drive again.
# boot-disc: none
# install: scenario

note "disc A served; its first MiB read"
dev="$(serve "$ISO_A")"
read_direct "$LINK" 0 1048576 || fail "read of A through $LINK failed"
cacheA="$(cache_of "$ISO_A")" || fail "no cache for disc A"
# The map is saved every 30 s: what was read since the last save is read again after a kill (by design).
wait_for 40 map_saved "$cacheA" 1048575
pid="$(unit_prop "$UNIT" MainPID)"
restarts=$(unit_restarts)
exec 3< "$dev"

note "kill -9 of the daemon ($pid) while a reader holds $dev"
kill -9 "$pid"
wait_for 60 sh -c "[ \$(systemctl show -P NRestarts $UNIT) -gt $restarts ]"
wait_for 60 unit_is "$UNIT" active
wait_for 30 sh -c "blkcache list --json | jq -e '.[] | select(.source == \"/dev/sr0\") | .daemon_running and .state == \"live\"'"
expect_eq "devices of /dev/sr0 after the restart" "$(listed_dev /dev/sr0)" "$dev"
[ "$(unit_prop "$UNIT" MainPID)" != "$pid" ] || fail "MainPID is still the killed daemon's"
journal_has 6 "re-attaching to the device of a killed daemon" || fail "the restarted unit did not re-attach"
expect_eq "$LINK after the restart" "$(served_dev)" "$dev"

note "the reader goes on; cached sectors are not read from the drive again"
before=$(sr0_reads)
dd of=/tmp/held.bin bs=65536 count=16 iflag=direct status=none <&3 || fail "a read on the held $dev failed after the restart"
cmp /tmp/held.bin <(head -c 1048576 "$ISO_A") || fail "the held $dev read other bytes than disc A's after the restart"
expect_eq "sr0 reads for A's first MiB, cached before the kill" "$(sr0_reads)" "$before"
exec 3<&-
cmp "$LINK" "$ISO_A" || fail "$LINK differs from disc A after the restart"
