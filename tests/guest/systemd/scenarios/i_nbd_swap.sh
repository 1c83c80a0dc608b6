# c_swap on Debian 12's own 6.1 kernel (no ublk, served through /dev/nbdN): a quick swap ends A's daemon (status 3,
# A's map saved) and the restarted unit serves B from B's own cache; back to A resumes A's cache.
# kernel: 6.1
# boot-disc: none
# install: scenario

nbd_unwatched
. /blkcache-test/c_swap.sh
