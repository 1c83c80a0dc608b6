# Other removable media (a card reader: QEMU's removable SCSI disk, sdX): off by default, a card inserted is left
# alone; once the reader is enabled the way the README says (a local udev rule setting BLKCACHE_ENABLE=1 on it), a
# card inserted starts blkcache@sdX.service and /dev/blkcache/sdX serves its bytes; udisks ignores the raw reader
# and the card's partition and offers the blkcache device's partition to automount; a hard disk enabled the
# same way is never served; a swapped card is served from its own cache; a card pulled out ends the unit as a
# success with its map saved; the first card inserted again is attached by udev and served from its cache (no reader
# reads for what was read before).
# boot-disc: none
# install: scenario

use_card_reader
wait_for 30 test -b "$CARD"
expect_eq "$CARD removable" "$(cat "/sys/block/$CARD_NAME/removable")" 1
note "$CARD_NAME events_poll_msecs=$(cat "/sys/block/$CARD_NAME/events_poll_msecs") (block.events_dfl_poll_msecs=$(cat /sys/module/block/parameters/events_dfl_poll_msecs))"

note "not enabled: a card inserted is left alone"
rm -f /etc/udev/rules.d/61-blkcache-enable.rules
udevadm control --reload
starts="$(journalctl -o cat --no-pager | grep -c "^Started.*blkcache@$CARD_NAME" || true)"
insert_card card.img
wait_for 30 card_holds "$CARD_IMG"
wait_for 20 test -b "${CARD}1"
udevadm settle
sleep 3
unit_is "$CARD_UNIT" inactive || fail "$CARD_UNIT is $(unit_state "$CARD_UNIT") for a reader that is not enabled"
expect_eq "starts of $CARD_UNIT" "$(journalctl -o cat --no-pager | grep -c "^Started.*blkcache@$CARD_NAME" || true)" "$starts"
[ -e "$CARD_LINK" ] && fail "$CARD_LINK exists for a reader that is not enabled"
udevadm info -q property "$CARD" | grep -q '^UDISKS_IGNORE=' && fail "$CARD is hidden from udisks while not served"

note "enabled (a rule by the reader's serial): the card already in is served once udev sees it again (trigger)"
enable_card_reader
udevadm trigger --action=change --settle --parent-match="/sys/block/$CARD_NAME"
wait_for 40 unit_is "$CARD_UNIT" active
wait_for 30 link_serves "$CARD_IMG" "$CARD_LINK"
dev="$(served_dev "$CARD_LINK")"
note "$CARD_LINK -> $dev"
cmp "$CARD_LINK" "$CARD_IMG" || fail "$CARD_LINK differs from the card"
expect_eq "list --json device of $CARD" "$(listed_dev "$CARD")" "$dev"
udevadm settle
for p in "$CARD UDISKS_IGNORE=1" "${CARD}1 UDISKS_IGNORE=1" "$dev BLKCACHE_DRIVE=$CARD_NAME" "${dev}p1 UDISKS_AUTO=1" "${dev}p1 UDISKS_SYSTEM=0"; do
    set -- $p
    wait_for 10 sh -c "udevadm info -q property $1 | grep -qx '$2'"
done
wait_for 20 udisks_says "${dev}p1" HintAuto true
expect_eq "udisks HintIgnore of ${CARD}1" "$(udisks_hint "${CARD}1" HintIgnore)" true
cmp "${dev}p1" "$ISO_A" || fail "${dev}p1 differs from the card's partition"
cacheA="$(cache_of_source "$CARD")"
read_direct "$CARD_LINK" 0 1048576 || fail "read of the card's first MiB failed"

note "a hard disk ($DISK_NAME, not removable) enabled the same way is never served"
expect_eq "$DISK removable" "$(cat "/sys/block/$DISK_NAME/removable")" 0
serial="$(udevadm info -q property -n "$DISK" | sed -n 's/^ID_SERIAL=//p')"
[ -n "$serial" ] || fail "$DISK has no ID_SERIAL"
printf 'SUBSYSTEM=="block", ENV{ID_SERIAL}=="%s", ENV{BLKCACHE_ENABLE}="1"\n' "$serial" \
    > /etc/udev/rules.d/61-blkcache-enable-disk.rules
udevadm control --reload
udevadm trigger --action=change --settle "$DISK"
udevadm info -q property "$DISK" | grep -qx 'BLKCACHE_ENABLE=1' || fail "the rule did not mark $DISK enabled"
sleep 3
unit_is blkcache@$DISK_NAME.service inactive || fail "blkcache@$DISK_NAME.service is $(unit_state blkcache@$DISK_NAME.service) for a hard disk"
journalctl -o cat --no-pager | grep -q "^Started.*blkcache@$DISK_NAME" && fail "blkcache@$DISK_NAME.service was started for a hard disk"
udevadm info -q property "$DISK" | grep -q '^UDISKS_IGNORE=' && fail "the hard disk $DISK is hidden from udisks"
rm -f /etc/udev/rules.d/61-blkcache-enable-disk.rules
udevadm control --reload

note "another card: served from its own cache"
insert_card other.iso
wait_for 40 link_serves "$ISO_B" "$CARD_LINK"
cmp "$CARD_LINK" "$ISO_B" || fail "$CARD_LINK differs from the second card"
cacheB="$(cache_of_source "$CARD")"
[ -n "$cacheB" ] || fail "no cache for the second card in blkcache list"
journalctl -u "$CARD_UNIT" -o cat -p 4..4 --no-pager | grep -qF "the disc was changed or removed" \
    || fail "no warning about the card change in the journal of $CARD_UNIT"

note "the card pulled out: the unit ends as a success, the map saved"
pull_card
wait_for 40 unit_is "$CARD_UNIT" inactive
expect_eq "unit result" "$(unit_prop "$CARD_UNIT" Result)" success
expect_cache_holds "$cacheB" "$ISO_B" > /dev/null || exit 1
[ -e "$CARD_LINK" ] && fail "$CARD_LINK still exists with no card"

note "the first card inserted again: attached by itself, from its cache"
insert_card card.img
wait_for 40 link_serves "$CARD_IMG" "$CARD_LINK"
expect_eq "the first card's cache" "$(cache_of_source "$CARD")" "$cacheA"
before=$(awk '{print $1}' /sys/block/$CARD_NAME/stat)
read_direct "$CARD_LINK" 0 1048576 || fail "read of the card's first MiB failed"
expect_eq "reader reads for the first MiB, read before" "$(awk '{print $1}' /sys/block/$CARD_NAME/stat)" "$before"
cmp "$CARD_LINK" "$CARD_IMG" || fail "$CARD_LINK differs from the first card"
