# d_eject_button on Debian 12's own 6.1 kernel (no ublk, served through /dev/nbdN): the eject button ends the unit
# as a success with the map saved; a reader holding the old /dev/nbdN gets no byte, also once disc B is in.
# kernel: 6.1
# boot-disc: none
# install: scenario

nbd_unwatched
. /blkcache-test/d_eject_button.sh
