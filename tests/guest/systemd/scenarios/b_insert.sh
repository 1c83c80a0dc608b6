# Insert -> device: the package installed with dpkg -i on a running system; a data disc inserted in the empty
# drive starts blkcache@sr0.service through the udev rule; /dev/blkcache/sr0 points at the /dev/ublkbN serving it
# (the pairing `blkcache list --json` shows), its bytes are the disc's; the unit is Type=notify with a STATUS
# naming the device and the share cached; its log reaches the journal with levels.
# boot-disc: none
# install: scenario

note "the installed files and a clean systemd-analyze verify"
for f in /usr/bin/blkcache /lib/systemd/system/blkcache@.service /lib/udev/rules.d/61-blkcache.rules; do
    [ -e "$f" ] || fail "the package did not install $f"
done
grep -q '^ExecStart=/usr/bin/blkcache ' /lib/systemd/system/blkcache@.service || fail "the unit does not run /usr/bin/blkcache"
out="$(systemd-analyze verify blkcache@sr0.service 2>&1)" || fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify complained: $out"

note "no disc: nothing served"
wait_for 30 test -b /dev/sr0
unit_is "$UNIT" inactive || fail "$UNIT is $(unit_state "$UNIT") with an empty drive"
poll="$(cat /sys/block/sr0/events_poll_msecs)"
note "sr0 events_poll_msecs=$poll (block.events_dfl_poll_msecs=$(cat /sys/module/block/parameters/events_dfl_poll_msecs))"

note "insert disc A"
insert "$ISO_A"
wait_for 30 unit_is "$UNIT" active
wait_for 20 link_serves "$ISO_A"
dev="$(served_dev)"
note "$LINK -> $dev"
expect_eq "list --json device of /dev/sr0" "$(listed_dev /dev/sr0)" "$dev"
cmp "$dev" "$ISO_A" || fail "$dev differs from disc A"

note "udev properties for desktops: udisks ignores sr0 and automounts the blkcache device under the disc's label"
props0="$(udevadm info -q property /dev/sr0)"
props="$(udevadm info -q property "$dev")"
grep -qx 'UDISKS_IGNORE=1' <<< "$props0" || fail "sr0 has no UDISKS_IGNORE=1 while served"
for p in UDISKS_SYSTEM=0 UDISKS_AUTO=1 UDISKS_NAME=BLKCACHE_TEST BLKCACHE_DRIVE=sr0 BLKCACHE_SOURCE=/dev/sr0; do
    grep -qx "$p" <<< "$props" || fail "$dev lacks the udev property $p: $(echo $props)"
done

note "Type=notify: READY and a STATUS naming the device"
expect_eq "Type" "$(unit_prop "$UNIT" Type)" notify
status="$(unit_prop "$UNIT" StatusText)"
case "$status" in *"as $dev:"*"% cached"*) ;; *) fail "StatusText '$status' does not name $dev and the share cached" ;; esac
# The whole disc was read above: a later STATUS says 100.0% cached.
wait_for 20 sh -c "systemctl show -P StatusText $UNIT | grep -q '100.0% cached'"
expect_eq "MainPID is the daemon" "$(unit_prop "$UNIT" MainPID)" "$(blkcache list --json | jq -r '.[0].pid')"

note "the journal has the daemon's lines with their levels"
journal_has 6 "device is live device=$dev" \
    || fail "no 'device is live' line at priority 6 (info) in the journal: $(journalctl -u "$UNIT" -o short-monotonic --no-pager | tail -n 5)"
