# b: restart on the same cache. Sectors read in a first session are served unchanged from the cache when the source
# is (1) replaced by zeros past its first 64 KiB (same identity: size, sector size, first 64 KiB), and
# (2) gone, with --offline. A sector never read cannot be invented: in (1) it reads as the new zeros, in (2) it fails.
. /scenarios/lib.sh

src=/tmp/b-src.iso
cache=/tmp/b-cache
cp "$ISO" "$src"
size=$(stat -c %s "$src")
rpos=$((1024 * 1024))
rlen=$((512 * 1024))
upos=$((4 * 1024 * 1024)) # never read in the first session
opos=$((5 * 1024 * 1024)) # never read at all before the offline session
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
must dd if="$dev" of=/tmp/b-first bs=65536 skip=$((rpos / 65536)) count=$((rlen / 65536)) iflag=direct status=none
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
expect_eq "cached bytes of the range" "$(map_bytes_in "$map" + $rpos $rlen)" "$rlen"
expect_eq "cached bytes of the unread range" "$(map_bytes_in "$map" + $upos 65536)" 0

# (1) Same identity, other bytes: keep the first 64 KiB, zero the rest.
dd if="$ISO" of="$src" bs=65536 count=1 status=none
dd if=/dev/zero of="$src" bs=65536 seek=1 count=$((size / 65536 - 1)) conv=notrunc status=none
truncate -s "$size" "$src"
expect_eq "zeroed source size" "$(stat -c %s "$src")" "$size"
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
must dd if="$dev" of=/tmp/b-second bs=65536 skip=$((rpos / 65536)) count=$((rlen / 65536)) iflag=direct status=none
cmp /tmp/b-first /tmp/b-second || fail "cached range changed when the source was zeroed"
dd if="$dev" of=/tmp/b-unread bs=65536 skip=$((upos / 65536)) count=1 iflag=direct status=none \
    || fail "reading a never-cached range of the zeroed source failed"
dd if=/dev/zero of=/tmp/b-zero bs=65536 count=1 status=none
cmp /tmp/b-unread /tmp/b-zero || fail "a never-cached range did not come from the (zeroed) source"
must blkcache del "$dev"

# (2) Source gone: --offline serves what is cached, and fails the rest.
rm -f "$src"
dev="$(blk_add "$src" --cache "$cache" --offline)" || exit 1
must dd if="$dev" of=/tmp/b-third bs=65536 skip=$((rpos / 65536)) count=$((rlen / 65536)) iflag=direct status=none
cmp /tmp/b-first /tmp/b-third || fail "cached range changed when served offline"
dd if="$ISO" of=/tmp/b-ref bs=65536 skip=$((rpos / 65536)) count=$((rlen / 65536)) status=none
cmp /tmp/b-first /tmp/b-ref || fail "cached range differs from the original image"
expect_eq "cached bytes at $opos before going offline" "$(map_bytes_in "$map" + $opos 65536)" 0
why="$(expect_read_fails "$dev" 65536 $((opos / 65536)))" || exit 1
note "offline read of an uncached range failed as it must: $why"
must blkcache del "$dev"
exit 0
