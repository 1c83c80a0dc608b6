# A disc present at boot is attached at boot: the package was installed (dpkg -i) before udev's coldplug, disc A
# was in the drive from power-on; without any command, blkcache@sr0.service is active and /dev/blkcache/sr0
# serves A's bytes.
# boot-disc: test.iso
# install: boot

note "waiting for the boot-time attach"
wait_for 60 unit_is "$UNIT" active
wait_for 30 link_serves "$ISO_A"
dev="$(served_dev)"
expect_eq "list --json device of /dev/sr0" "$(listed_dev /dev/sr0)" "$dev"
cmp "$dev" "$ISO_A" || fail "$dev differs from disc A"
expect_eq "restarts" "$(unit_restarts)" 0
