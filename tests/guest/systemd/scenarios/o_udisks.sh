# Desktops, with udisks2 itself: while blkcache serves sr0, udisks ignores the raw drive (HintIgnore) and offers the
# blkcache device as the removable disc it stands for (HintAuto, not HintSystem, the disc's label as HintName);
# `udisksctl mount -b /dev/blkcache/sr0` mounts the disc (every file's bytes right) and unmounts it. The same disc
# in sr1 is refused (sr0 serves it), and the refused drive is not hidden from udisks.
# boot-disc: none
# install: scenario

note "udisks answers on the system bus"
wait_for 60 udisksctl status
dev="$(serve "$ISO_A")"

note "udisks ignores sr0 while it is served"
wait_for 20 udisks_says /dev/sr0 HintIgnore true

note "udisks offers $LINK ($dev) as a removable disc, named by its label"
udisksctl info -b "$LINK" > /dev/null 2>&1 || fail "udisksctl info -b $LINK: $(udisksctl info -b "$LINK" 2>&1)"
wait_for 20 udisks_says "$LINK" HintAuto true
for hint in "HintIgnore false" "HintSystem false" "HintName BLKCACHE_TEST" "IdLabel BLKCACHE_TEST" "IdType iso9660"; do
    set -- $hint
    expect_eq "udisks $1 of $LINK" "$(udisks_hint "$LINK" "$1")" "$2"
done
expect_eq "udisks Device of $LINK" "$(udisks_hint "$LINK" Device)" "$dev"

note "udisksctl mount -b $LINK"
out="$(udisksctl mount -b "$LINK" 2>&1)" || fail "udisksctl mount -b $LINK failed: $out"
note "$out"
mnt="${out##* at }"
mnt="${mnt%.}"
expect_eq "the mount's source" "$(findmnt -n -o SOURCE --mountpoint "$mnt")" "$dev"
(cd "$mnt" && sha256sum --quiet -c "$DATA/manifest.sha256") || fail "files under $mnt differ from disc A's"
expect_eq "files on the disc" "$(cd "$mnt" && find . -type f | wc -l)" "$(wc -l < "$DATA/manifest.sha256")"
out="$(udisksctl unmount -b "$LINK" 2>&1)" || fail "udisksctl unmount -b $LINK failed: $out"
findmnt -n --mountpoint "$mnt" > /dev/null && fail "$mnt is still mounted after udisksctl unmount"
unit_is "$UNIT" active || fail "$UNIT is $(unit_state "$UNIT") after the unmount"

note "the same disc in sr1: refused, and sr1 is not hidden from udisks"
insert "$ISO_A" cd1
wait_for 40 unit_is blkcache@sr1.service failed
wait_for 20 sh -c '! udevadm info -q property /dev/sr1 | grep -q "^UDISKS_IGNORE="'
wait_for 20 udisks_says /dev/sr1 HintIgnore false
expect_eq "udisks HintIgnore of sr0 (still served)" "$(udisks_hint /dev/sr0 HintIgnore)" true
insert "$ISO_B" cd1
wait_for 40 link_serves "$ISO_B" /dev/blkcache/sr1
wait_for 20 udisks_says /dev/sr1 HintIgnore true
