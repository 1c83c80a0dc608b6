# d: bad sectors. A scsi_debug disk with 2048-byte sectors holds a known pattern and 4 unreadable sectors (medium
# errors at LBA 500..503). Through blkcache: reads of them fail, every other sector reads correctly, the mapfile
# marks exactly those sectors '-' (all others '+'), and reading them again does not reach the drive.
. /scenarios/lib.sh

bad=500
nbad=4
sdev="$(scsi_debug_load dev_size_mb=4 sector_size=2048 opts=2 medium_error_start=$bad medium_error_count=$nbad delay=0)" \
    || exit 1
nsec=$(($(cat /sys/block/$sdev/size) / 4))
size=$((nsec * 2048))
note "scsi_debug disk /dev/$sdev: $nsec sectors of 2048 bytes"
# A pattern the drive cannot fake with zeros: random bytes, written around the bad sectors.
must dd if=/dev/urandom of=/tmp/d-pattern bs=2048 count="$nsec" status=none
must dd if=/tmp/d-pattern of="/dev/$sdev" bs=2048 count="$bad" oflag=direct conv=notrunc status=none
must dd if=/tmp/d-pattern of="/dev/$sdev" bs=2048 skip=$((bad + nbad)) seek=$((bad + nbad)) \
    count=$((nsec - bad - nbad)) oflag=direct conv=notrunc status=none
drop_caches
# What the good sectors must read as (the bad ones are never compared).
dd if=/tmp/d-pattern of=/tmp/d-before bs=2048 count="$bad" status=none
dd if=/tmp/d-pattern of=/tmp/d-after bs=2048 skip=$((bad + nbad)) status=none

cache=/tmp/d-cache
dev="$(blk_add "/dev/$sdev" --cache "$cache")" || exit 1
expect_eq "ublk logical_block_size" "$(cat /sys/block/${dev#/dev/}/queue/logical_block_size)" 2048
must dd if="$dev" of=/tmp/d-got-before bs=2048 count="$bad" iflag=direct status=none
cmp /tmp/d-got-before /tmp/d-before || fail "sectors before the bad ones differ"
must dd if="$dev" of=/tmp/d-got-after bs=2048 skip=$((bad + nbad)) iflag=direct status=none
cmp /tmp/d-got-after /tmp/d-after || fail "sectors after the bad ones differ"
# A read spanning good and bad sectors fails as a whole.
expect_read_fails "$dev" 65536 $(((bad * 2048) / 65536)) > /dev/null || exit 1
i=$bad
while [ $i -lt $((bad + nbad)) ]; do
    why="$(expect_read_fails "$dev" 2048 $i)" || exit 1
    note "bad sector $i: $why"
    i=$((i + 1))
done

# Known-bad sectors are not retried on the drive: its read counter stays put.
r1="$(dev_reads "$sdev")"
i=$bad
while [ $i -lt $((bad + nbad)) ]; do
    expect_read_fails "$dev" 2048 $i > /dev/null || exit 1
    i=$((i + 1))
done
must dd if="$dev" of=/dev/null bs=2048 count="$bad" iflag=direct status=none
r2="$(dev_reads "$sdev")"
expect_eq "$sdev reads for a second pass over known sectors" "$r2" "$r1"

must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
map_expect "$map" "0 $((bad * 2048)) +
$((bad * 2048)) $((nbad * 2048)) -
$(((bad + nbad) * 2048)) $(((nsec - bad - nbad) * 2048)) +"
set -- $(status_json "$map" bad_sector)
expect_eq "blkcache status: bad-sector bytes" "$1" $((nbad * 2048))
scsi_debug_unload
exit 0
