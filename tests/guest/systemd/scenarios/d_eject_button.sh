# The eject button while served: QEMU's `eject` without -f is the drive's button (an eject request that udev's
# cdrom_id honours). The disc comes out, the unit ends as a success with the map holding what was read just
# before the button, and a reader still holding the device gets no byte any more (an I/O error, or end of file: Linux
# gives a removed disk a size of 0), never the next disc's bytes.
# boot-disc: none
# install: scenario

note "disc A served; a range read just before the button"
dev="$(serve "$ISO_A")"
cacheA="$(cache_of "$ISO_A")" || fail "no cache for disc A"
read_direct "$LINK" 3145728 524288 || fail "read of A at 3 MiB failed"
exec 3< "$dev"

note "the eject button"
host_cmd "eject cd0"
wait_for 40 unit_is "$UNIT" inactive
expect_eq "unit result" "$(unit_prop "$UNIT" Result)" success
wait_for 20 sh -c '! udevadm info -q property /dev/sr0 | grep -q "^ID_CDROM_MEDIA=1"'
expect_eq "A's map at 3 MiB (read just before the button)" "$(map_status_at "$cacheA" 3145728)" +
expect_eq "A's map at 3.5 MiB - 1" "$(map_status_at "$cacheA" $((3670016 - 1)))" +
expect_cache_holds "$cacheA" "$ISO_A" > /dev/null || exit 1

note "the old reader gets no byte, also once disc B is in"
# old_read_gets_nothing SKIP WHEN: a read on the old device's fd fails or delivers no byte.
old_read_gets_nothing() {
    rm -f /tmp/old.bin
    if dd of=/tmp/old.bin bs=2048 count=1 skip="$1" iflag=direct status=none <&3 2> /tmp/old.err; then
        [ "$(stat -c %s /tmp/old.bin)" -eq 0 ] \
            || fail "the old device delivered $(stat -c %s /tmp/old.bin) bytes at sector $1 $2"
        note "old device, sector $1 $2: end of file"
    else
        note "old device, sector $1 $2: $(cat /tmp/old.err)"
    fi
}
for skip in 0 1600; do old_read_gets_nothing $skip "after the eject"; done
insert "$ISO_B"
wait_for 40 link_serves "$ISO_B"
for skip in 0 16 1600; do old_read_gets_nothing $skip "with disc B served"; done
exec 3<&-
