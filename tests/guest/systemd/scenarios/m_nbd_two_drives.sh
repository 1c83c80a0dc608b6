# f_two_drives on Debian 12's own 6.1 kernel (no ublk): two daemons each take an nbd device of their own; the same
# disc in both drives is refused on the second with the reason in its STATUS; another disc in sr1 is served beside.
# kernel: 6.1
# boot-disc: none
# install: scenario

nbd_unwatched
. /blkcache-test/f_two_drives.sh
