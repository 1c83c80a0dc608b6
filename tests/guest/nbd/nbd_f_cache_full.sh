# nbd f: s_cache_disk_full through /dev/nbdN (no ublk): the cache on a 3 MiB tmpfs fills while the whole ISO is
# read; every byte read is right, `blkcache list` says `live (cache full)` and --json has cache_state full with
# the ENOSPC reason (the nbd daemon publishes its cache health as the ublk one does), the saved map claims only
# bytes the image holds, and a second session on the full disk reads right.
. /scenarios/lib.sh
[ -e /dev/ublk-control ] && fail "this scenario is for kernels without ublk, but /dev/ublk-control exists"
. /scenarios/s_cache_disk_full.sh
