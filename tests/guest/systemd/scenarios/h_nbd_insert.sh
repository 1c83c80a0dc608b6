# b_insert on Debian 12's own 6.1 kernel, which has no ublk: the same package, unit and rules serve the inserted
# disc through the kernel's nbd driver. blkcache@sr0 active, /dev/blkcache/sr0 -> the /dev/nbdN of `list --json`
# (kind nbd, cache ok), bytes = disc, Type=notify READY and STATUS naming /dev/nbdN, journal levels, udisks
# properties; then stopping the unit while a reader holds the device takes the name away at once (the kernel
# announces the disconnect only at the last close), and the device disconnects once closed.
# kernel: 6.1
# boot-disc: none
# install: scenario

nbd_unwatched
. /blkcache-test/b_insert.sh

note "served through the nbd driver"
case "$dev" in /dev/nbd[0-9]*) ;; *) fail "$LINK -> '$dev', not an nbd device" ;; esac
[ -e /dev/ublk-control ] && fail "the 6.1 guest has /dev/ublk-control"
expect_eq "list --json kind" "$(blkcache list --json | jq -r '.[0].kind')" nbd
expect_eq "list --json cache_state" "$(blkcache list --json | jq -r '.[0].cache_state')" ok

note "stopping the unit while a reader holds $dev: the name goes at once; closed, the device disconnects"
exec 3< "$dev"
must systemctl stop "$UNIT"
expect_eq "unit result" "$(unit_prop "$UNIT" Result)" success
wait_for 20 sh -c "[ ! -e $LINK ]"
udevadm settle
udevadm info -q symlink "$dev" | grep -q blkcache && fail "$dev keeps a blkcache name: $(udevadm info -q symlink "$dev")"
expect_eq "list --json after stop" "$(blkcache list --json | jq length)" 0
exec 3<&-
wait_for 20 sh -c "[ ! -e /sys/block/${dev#/dev/}/pid ]"
