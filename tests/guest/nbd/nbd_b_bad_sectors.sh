# nbd b: bad sectors through /dev/nbdN. A scsi_debug disk with 2048-byte sectors holds random bytes and 4 unreadable
# sectors (LBA 500..503). Reads of them fail, every other sector reads exactly, the map marks exactly those '-', and
# reading them (and the rest) again does not reach the drive.
. /scenarios/lib.sh

bad=500
nbad=4
sdev="$(scsi_debug_load dev_size_mb=4 sector_size=2048 opts=2 medium_error_start=$bad medium_error_count=$nbad delay=0)" \
    || exit 1
nsec=$(($(cat /sys/block/$sdev/size) / 4))
must dd if=/dev/urandom of=/tmp/nb-pattern bs=2048 count="$nsec" status=none
must dd if=/tmp/nb-pattern of="/dev/$sdev" bs=2048 count="$bad" oflag=direct conv=notrunc status=none
must dd if=/tmp/nb-pattern of="/dev/$sdev" bs=2048 skip=$((bad + nbad)) seek=$((bad + nbad)) \
    count=$((nsec - bad - nbad)) oflag=direct conv=notrunc status=none
drop_caches
dd if=/tmp/nb-pattern of=/tmp/nb-before bs=2048 count="$bad" status=none
dd if=/tmp/nb-pattern of=/tmp/nb-after bs=2048 skip=$((bad + nbad)) status=none

cache=/tmp/nb-cache
dev="$(blk_add "/dev/$sdev" --cache "$cache")" || exit 1
case "$dev" in /dev/nbd*) ;; *) fail "add gave $dev, not /dev/nbdN" ;; esac
must dd if="$dev" of=/tmp/nb-got-before bs=2048 count="$bad" iflag=direct status=none
cmp /tmp/nb-got-before /tmp/nb-before || fail "sectors before the bad ones differ"
must dd if="$dev" of=/tmp/nb-got-after bs=2048 skip=$((bad + nbad)) iflag=direct status=none
cmp /tmp/nb-got-after /tmp/nb-after || fail "sectors after the bad ones differ"
i=$bad
while [ $i -lt $((bad + nbad)) ]; do
    why="$(expect_read_fails "$dev" 2048 $i)" || exit 1
    note "bad sector $i: $why"
    i=$((i + 1))
done
# Never read twice: a second pass over every known sector leaves the drive's read counter alone.
r1="$(dev_reads "$sdev")"
i=$bad
while [ $i -lt $((bad + nbad)) ]; do
    expect_read_fails "$dev" 2048 $i > /dev/null || exit 1
    i=$((i + 1))
done
must dd if="$dev" of=/dev/null bs=2048 count="$bad" iflag=direct status=none
must dd if="$dev" of=/dev/null bs=2048 skip=$((bad + nbad)) iflag=direct status=none
expect_eq "$sdev reads for a second pass over known sectors" "$(dev_reads "$sdev")" "$r1"

must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
map_expect "$map" "0 $((bad * 2048)) +
$((bad * 2048)) $((nbad * 2048)) -
$(((bad + nbad) * 2048)) $(((nsec - bad - nbad) * 2048)) +"
scsi_debug_unload
exit 0
