# a_boot_attach on Debian 12's own 6.1 kernel (no ublk): with the package installed before udev's coldplug and
# disc A in the drive from power-on, blkcache@sr0 serves it through /dev/nbdN at boot, named /dev/blkcache/sr0.
# kernel: 6.1
# boot-disc: test.iso
# install: boot

. /blkcache-test/a_boot_attach.sh
case "$dev" in /dev/nbd[0-9]*) ;; *) fail "$LINK -> '$dev', not an nbd device" ;; esac
