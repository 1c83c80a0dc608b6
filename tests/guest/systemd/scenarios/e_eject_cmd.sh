# `blkcache eject`: stops serving the drive (map saved, unit ends as a success, not restarted) and ejects the
# disc; by drive name (sr0) and by the device serving it (/dev/ublkbN).
# boot-disc: none
# install: scenario

for how in sr0 device; do
    note "disc A served; blkcache eject by $how"
    dev="$(serve "$ISO_A")"
    cacheA="$(cache_of "$ISO_A")" || fail "no cache for disc A"
    read_direct "$LINK" 2097152 262144 || fail "read of A at 2 MiB failed"
    starts=$(unit_starts)
    target=sr0
    [ "$how" = device ] && target="$dev"
    out="$(blkcache eject "$target" 2>&1)" || fail "blkcache eject $target failed: $out"
    note "$out"
    case "$out" in *"map saved"*"ejected /dev/sr0"*) ;; *) fail "blkcache eject said: $out" ;; esac
    wait_for 20 unit_is "$UNIT" inactive
    expect_eq "unit result" "$(unit_prop "$UNIT" Result)" success
    # udev's view (cdrom_id opens the drive O_NONBLOCK): an open for reading would close the tray again
    # (dev.cdrom.autoclose), as on a real drive.
    wait_for 20 sh -c '! udevadm info -q property /dev/sr0 | grep -q "^ID_CDROM_MEDIA=1"'
    expect_eq "A's map at 2 MiB" "$(map_status_at "$cacheA" 2097152)" +
    sleep 3
    unit_is "$UNIT" inactive || fail "$UNIT came back after blkcache eject ($(unit_state "$UNIT"))"
    expect_eq "starts of $UNIT after blkcache eject" "$(unit_starts)" "$starts"
done
