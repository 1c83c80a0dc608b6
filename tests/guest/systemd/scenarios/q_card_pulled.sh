# A card pulled out while read is not recorded as bad sectors: an enabled card reader (sdX) serves a card; an
# O_DIRECT read through /dev/blkcache/sdX is under way when the card is pulled out (QEMU `eject -f`): the read
# fails, the unit ends, and the saved map has only `+` (the card's bytes) and `?`: no `-` nor `*`.
# boot-disc: none
# install: scenario

use_card_reader
wait_for 30 test -b "$CARD"
[ -e /etc/udev/rules.d/61-blkcache-enable.rules ] || enable_card_reader
note "the card served"
insert_card test.iso
wait_for 40 link_serves "$ISO_A" "$CARD_LINK"
cache="$(cache_of_source "$CARD")"
[ -n "$cache" ] || fail "no cache for the card in blkcache list"
size=$(stat -c %s "$ISO_A")

note "an O_DIRECT read of the whole card, 64 KiB at a time; the card pulled out after 1 MiB"
rm -f /tmp/pulled.at
(
    off=0
    while [ $off -lt "$size" ]; do
        [ $off -eq 1048576 ] && pull_card
        read_direct "$CARD_LINK" $off 65536 2> /dev/null || { echo $off > /tmp/pulled.at; exit 0; }
        off=$((off + 65536))
        sleep 0.1
    done
) &
reader=$!
wait_for 60 test -e /tmp/pulled.at
wait $reader
failed_at=$(cat /tmp/pulled.at)
note "the read failed at $failed_at"
[ "$failed_at" -ge 1048576 ] || fail "the read failed at $failed_at, before the card was pulled"
wait_for 40 unit_is "$CARD_UNIT" inactive
expect_eq "unit result" "$(unit_prop "$CARD_UNIT" Result)" success

note "the map: the card's bytes and untried space, no bad sectors"
the_map_has_only "$cache" "+?"
done_bytes="$(expect_cache_holds "$cache" "$ISO_A")" || exit 1
[ "$done_bytes" -ge 1048576 ] || fail "the map holds $done_bytes bytes as read, want the 1 MiB read before the card was pulled"
