# e_eject_cmd on Debian 12's own 6.1 kernel (no ublk, served through /dev/nbdN): `blkcache eject sr0` and
# `blkcache eject /dev/nbdN` save the map, end the unit as a success (not restarted) and eject the disc.
# kernel: 6.1
# boot-disc: none
# install: scenario

nbd_unwatched
. /blkcache-test/e_eject_cmd.sh
