# h: a disc swapped or ejected under a running blkcache never corrupts its cache. With /dev/sr0 as the source:
# 1. swap (eject + other.iso) after caching part of the disc: the cached part still reads with the original bytes;
#    uncached reads fail and never return a byte of the other disc; after `del` the map holds `+` exactly for what
#    was read before the swap, those image bytes are the original disc's, and nothing is `-`, `*` or `/`.
# 2. swap while a miss is in flight (held by --test-latency between the engine's pre-read check and the read): the
#    read after the swap fails and marks nothing (the check after the read catches it).
# 3. eject without a new disc: uncached reads fail, cached ones still work, nothing is marked bad.
# 4. swap, then another program opens the drive (as udev would): the kernel then serves the new disc's bytes on
#    blkcache's old descriptor; uncached reads must still fail.
# In 1-3 nothing but blkcache opens /dev/sr0 while it is swapped (no udev here), so the change is seen only through
# the drive's own media-change flag (CDROM_MEDIA_CHANGED). The test disc is put back in the drive at the end (and on failure).
. /scenarios/lib.sh

OTHER="$DATA/other.iso"
cache=/tmp/h-cache
size=$(stat -c %s "$ISO")
osize=$(stat -c %s "$OTHER")
S=2048

# put_back: the test disc back in the drive (the tray is locked while a daemon has it open: eject -f first).
put_back() {
    host_cmd "eject -f cd0"
    host_cmd "change cd0 @DATA@/test.iso raw read-only"
    wait_for 30 cmp /dev/sr0 "$ISO"
}
trap 'put_back' EXIT

# swap_to ISO-NAME: eject (forced: the tray is locked) and insert @DATA@/ISO-NAME; no wait (nothing may open sr0).
swap_to() {
    host_cmd "eject -f cd0"
    host_cmd "change cd0 @DATA@/$1 raw read-only"
}

# sector_of FILE N OUT: sector N (2048 bytes) of FILE into OUT.
sector_of() {
    dd if="$1" of="$3" bs=$S skip="$2" count=1 status=none 2> /dev/null
}

# read_dev DEV POS LEN OUT: one O_DIRECT read through DEV (64 KiB blocks when aligned, else 2 KiB); dd's exit code.
read_dev() {
    rd_bs=65536
    [ $(($2 % rd_bs)) -eq 0 ] && [ $(($3 % rd_bs)) -eq 0 ] || rd_bs=$S
    dd if="$1" of="$4" bs=$rd_bs skip=$(($2 / rd_bs)) count=$(($3 / rd_bs)) iflag=direct status=none 2> /tmp/h-dd.err
}

# expect_original DEV POS LEN WHY: DEV's bytes at POS (+LEN) read and equal the test disc's.
expect_original() {
    read_dev "$1" "$2" "$3" /tmp/h-got || fail "$4: read of $1 at $2 (+$3) failed: $(cat /tmp/h-dd.err)"
    dd if="$ISO" of=/tmp/h-ref bs=$S skip=$(($2 / S)) count=$(($3 / S)) status=none
    cmp /tmp/h-got /tmp/h-ref > /dev/null || fail "$4: $1 at $2 (+$3) differs from the original disc"
}

# expect_no_bytes DEV SECTOR WHY: an O_DIRECT read of that sector through DEV fails (returns no byte at all).
expect_no_bytes() {
    rm -f /tmp/h-got
    if read_dev "$1" $(($2 * S)) $S /tmp/h-got; then
        sector_of "$OTHER" "$2" /tmp/h-oth
        cmp /tmp/h-got /tmp/h-oth > /dev/null 2>&1 && fail "$3: sector $2 returned the OTHER disc's bytes"
        fail "$3: sector $2 read successfully after the disc changed"
    fi
    [ -s /tmp/h-got ] && fail "$3: sector $2 failed but wrote $(stat -c %s /tmp/h-got) bytes"
    return 0
}

# expect_clean_map MAP WHY: no bad, non-trimmed or non-scraped bytes (a swap or eject must not mark any).
expect_clean_map() {
    for st in - '*' /; do
        expect_eq "$2: '$st' bytes in the map" "$(map_bytes "$1" "$st")" 0
    done
}

# The two discs must differ where the scenario reads, or it could not tell them apart.
A=65536 ALEN=131072
sector_of "$ISO" $((A / S)) /tmp/h-a1
sector_of "$OTHER" $((A / S)) /tmp/h-a2
cmp /tmp/h-a1 /tmp/h-a2 > /dev/null 2>&1 && fail "test data: test.iso and other.iso have the same sector at $A"

# Session 1: what the kernel's partition scan reads when the device appears.
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
img="$(cache_image "$cache")" || exit 1
cp "$map" /tmp/h-map0
base="$(map_bytes /tmp/h-map0 +)"
expect_eq "partition-scan bytes inside A" "$(map_bytes_in /tmp/h-map0 + $A $ALEN)" 0
note "partition scan cached $base bytes"

# Session 2: cache A, swap the disc, probe uncached sectors until the swap is seen. One-sector fetches
# (--read-size 2048): without the media-change check the first failed read would mark a sector '-' at once.
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off --read-size $S)" || exit 1
expect_original "$dev" $A $ALEN "before the swap"
swap_to other.iso
# Probe sectors from 256 KiB up (inside other.iso, where its bytes differ from test.iso's): each read either
# returns the original disc's bytes (the swap has not happened yet: legitimately cached) or fails; the first
# failure is the swap being noticed.
s=$((262144 / S))
ok=0
seen=""
while [ $((s * S)) -lt $osize ]; do
    if [ "$(map_status_at /tmp/h-map0 $((s * S)))" = + ]; then
        s=$((s + 1))
        continue
    fi
    if read_dev "$dev" $((s * S)) $S /tmp/h-got; then
        sector_of "$ISO" $s /tmp/h-ref
        sector_of "$OTHER" $s /tmp/h-oth
        cmp /tmp/h-got /tmp/h-oth > /dev/null 2>&1 && ! cmp /tmp/h-ref /tmp/h-oth > /dev/null 2>&1 \
            && fail "sector $s returned the OTHER disc's bytes"
        cmp /tmp/h-got /tmp/h-ref > /dev/null || fail "sector $s returned bytes of neither disc"
        ok=$((ok + 1))
        s=$((s + 1))
        sleep 0.1
        continue
    fi
    seen=$s
    break
done
[ -n "$seen" ] || fail "the swap was never noticed: every probe up to $osize read the original disc"
note "swap noticed at sector $seen after $ok probes read before it: $(cat /tmp/h-dd.err | tail -n1)"
# (1) the cached part still reads with the original bytes.
expect_original "$dev" $A $ALEN "after the swap, cached range"
# (2) every uncached sector fails, inside other.iso (where a wrong read would return its bytes) and past it.
t=$seen
while [ $((t * S)) -lt $osize ]; do
    expect_no_bytes "$dev" $t "after the swap"
    t=$((t + 7))
done
far=$((3 * 1048576 / S))
expect_eq "status of sector $far in the partition-scan map" "$(map_status_at /tmp/h-map0 $((far * S)))" "?"
expect_no_bytes "$dev" $far "after the swap, past the other disc's end"
expect_no_bytes "$dev" $seen "after the swap, the sector that noticed it, again"
must blkcache del "$dev"
# (3) the map: '+' exactly for what was read before the swap; the image holds the original disc there.
expect_eq "'+' bytes after the swap session" "$(map_bytes "$map" +)" $((base + ALEN + ok * S))
expect_eq "'+' bytes of A" "$(map_bytes_in "$map" + $A $ALEN)" $ALEN
expect_eq "'+' bytes from the sector that noticed the swap on" \
    "$(map_bytes_in "$map" + $((seen * S)) $((size - seen * S)))" "$(map_bytes_in /tmp/h-map0 + $((seen * S)) $((size - seen * S)))"
expect_clean_map "$map" "after the swap session"
expect_cached_match "$map" "$img" "$ISO"
grep -q "changed or removed" "$cache/daemon.log" || fail "the daemon log does not say the disc changed"
cp "$map" /tmp/h-map2
put_back

# Session 3: a swap while a miss is in flight. The latency (applied after the engine's check, before the read)
# holds the read of sector $seen until after the swap: the read fails (the drive's unit attention, EIO, which
# looks like a bad sector) and the check in `complete` must keep it from marking '-'.
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off --read-size $S --test-latency 4000)" || exit 1
name="${dev#/dev/}"
(read_dev "$dev" $((seen * S)) $S /tmp/h-inflight; echo $? > /tmp/h-inflight.rc) &
wait_for 20 sh -c "[ \"\$(awk '{ print \$1 }' /sys/block/$name/inflight)\" -ge 1 ]"
sleep 1 # the request is in its latency, past the engine's pre-read check
swap_to other.iso
wait
expect_eq "in-flight read across the swap: dd's exit code" "$(cat /tmp/h-inflight.rc)" 1
[ -s /tmp/h-inflight ] && fail "the in-flight read across the swap returned bytes"
expect_original "$dev" $A $ALEN "after an in-flight swap, cached range"
must blkcache del "$dev"
expect_eq "status of the sector read across the swap" "$(map_status_at "$map" $((seen * S)))" "?"
expect_eq "'+' bytes after the in-flight swap" "$(map_bytes "$map" +)" "$(map_bytes /tmp/h-map2 +)"
expect_clean_map "$map" "after the in-flight swap"
put_back

# Session 4: eject without a new disc. A new range C is cached first; after the eject C and A still read, an
# uncached range does not, and nothing is marked.
C=$((1048576 + 65536)) CLEN=65536
expect_eq "'+' bytes of C before session 4" "$(map_bytes_in "$map" + $C $CLEN)" 0
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
expect_original "$dev" $C $CLEN "before the eject"
host_cmd "eject -f cd0"
# Probe one sector per 64 KiB chunk from 2 MiB up until a read fails (reads before the eject cache their chunk).
u=$((2 * 1048576 / S))
ok4=0
until ! read_dev "$dev" $((u * S)) $S /tmp/h-got; do
    sector_of "$ISO" $u /tmp/h-ref
    cmp /tmp/h-got /tmp/h-ref > /dev/null || fail "before the eject: sector $u differs from the original disc"
    ok4=$((ok4 + 1))
    u=$((u + 32))
    [ $ok4 -lt 40 ] || fail "the eject was never noticed"
    sleep 0.1
done
note "eject noticed at sector $u after $ok4 probes: $(tail -n1 /tmp/h-dd.err)"
expect_no_bytes "$dev" $((u + 40)) "after the eject"
expect_no_bytes "$dev" $u "after the eject, the sector that noticed it, again"
expect_original "$dev" $C $CLEN "after the eject, cached range C"
expect_original "$dev" $A $ALEN "after the eject, cached range A"
must blkcache del "$dev"
expect_eq "'+' bytes of C" "$(map_bytes_in "$map" + $C $CLEN)" $CLEN
expect_eq "'+' bytes of the chunk that noticed the eject" "$(map_bytes_in "$map" + $((u * S)) 65536)" 0
expect_eq "'+' bytes after the eject session" "$(map_bytes "$map" +)" $(($(map_bytes /tmp/h-map2 +) + CLEN + ok4 * 65536))
expect_clean_map "$map" "after the eject"
expect_cached_match "$map" "$img" "$ISO"
cp "$map" /tmp/h-map4
put_back

# Session 5: a swap followed by another program opening the drive (as udev does on a media-change event). The open
# makes the kernel accept the new disc: reads on blkcache's old descriptor then succeed and return the NEW disc's
# bytes. Uncached reads through blkcache must still fail.
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
swap_to other.iso
wait_for 30 cmp /dev/sr0 "$OTHER"
v=$(((262144 + 65536) / S))
expect_eq "status of sector $v before session 5" "$(map_status_at "$map" $((v * S)))" "?"
expect_no_bytes "$dev" $v "after a swap and an open of the drive"
expect_no_bytes "$dev" $((v + 33)) "after a swap and an open of the drive"
expect_original "$dev" $A $ALEN "after a swap and an open of the drive, cached range A"
must blkcache del "$dev"
expect_eq "'+' bytes after session 5" "$(map_bytes "$map" +)" "$(map_bytes /tmp/h-map4 +)"
expect_clean_map "$map" "after a swap and an open of the drive"
expect_cached_match "$map" "$img" "$ISO"
exit 0
