# Audio-only discs are left alone. QEMU emulates data discs only, so a local rule placed after
# 60-cdrom_id.rules turns what cdrom_id reports for the disc in sr0 into what it reports for an audio CD (twelve
# tracks, all audio, no data track): inserted, it starts no blkcache@sr0.service, gets no /dev/blkcache/sr0 and
# stays visible to udisks (a desktop's CD player takes it). An enhanced CD (audio tracks and a data track) is
# served, and so is the same disc once the rule is gone: the report is all that differed.
# boot-disc: none
# install: scenario

AUDIO_RULE=/etc/udev/rules.d/60-test-audio-cd.rules
wait_for 30 test -b /dev/sr0
# Earlier scenarios' discs out first (disc B served from sr1 would keep sr0 from serving it below).
for drive in 0 1; do
    if unit_is "blkcache@sr$drive.service" active; then
        note "an earlier scenario's disc out of sr$drive"
        host_cmd "eject -f cd$drive"
        systemctl stop "blkcache@sr$drive.service"
        wait_for 40 unit_is "blkcache@sr$drive.service" inactive
    fi
done

note "an audio CD: left alone"
cat > "$AUDIO_RULE" << 'RULE'
KERNEL=="sr0", ENV{ID_CDROM_MEDIA}=="1", ENV{ID_CDROM_MEDIA_TRACK_COUNT_DATA}="", ENV{ID_CDROM_MEDIA_TRACK_COUNT_AUDIO}="12", ENV{ID_CDROM_MEDIA_TRACK_COUNT}="12"
RULE
udevadm control --reload
starts="$(unit_starts)"
insert "$ISO_A"
wait_for 30 sh -c 'udevadm info -q property /dev/sr0 | grep -qx ID_CDROM_MEDIA_TRACK_COUNT_AUDIO=12'
udevadm info -q property /dev/sr0 | grep -q '^ID_CDROM_MEDIA_TRACK_COUNT_DATA=' \
    && fail "the audio CD's report still has a data track: the test rule did not apply"
udevadm settle
sleep 3
unit_is "$UNIT" inactive || fail "$UNIT is $(unit_state "$UNIT") for an audio CD"
expect_eq "starts of $UNIT" "$(unit_starts)" "$starts"
[ -e "$LINK" ] && fail "$LINK exists for an audio CD"
expect_eq "blkcache list --json device for /dev/sr0" "$(listed_dev /dev/sr0)" ""
udevadm info -q property /dev/sr0 | grep -q '^UDISKS_IGNORE=' && fail "sr0 is hidden from udisks with an audio CD in"

note "an enhanced CD (eleven audio tracks and one data track): served"
cat > "$AUDIO_RULE" << 'RULE'
KERNEL=="sr0", ENV{ID_CDROM_MEDIA_TRACK_COUNT_DATA}=="?*", ENV{ID_CDROM_MEDIA_TRACK_COUNT_AUDIO}="11", ENV{ID_CDROM_MEDIA_TRACK_COUNT}="12"
RULE
udevadm control --reload
udevadm trigger --action=change --settle /dev/sr0
udevadm info -q property /dev/sr0 | grep -qx ID_CDROM_MEDIA_TRACK_COUNT_AUDIO=11 \
    || fail "the enhanced CD's report has no audio tracks: the test rule did not apply"
wait_for 30 unit_is "$UNIT" active
wait_for 20 link_serves "$ISO_A"
cmp "$LINK" "$ISO_A" || fail "$LINK differs from disc A"

note "the rule gone, a data disc inserted: served"
rm -f "$AUDIO_RULE"
udevadm control --reload
insert "$ISO_B"
wait_for 40 link_serves "$ISO_B"
cmp "$LINK" "$ISO_B" || fail "$LINK differs from disc B"
