# a: an ISO9660 image file as the source. A partial O_DIRECT read caches exactly that range (the mapfile after
# `del` is the partition-scan map plus the range); then the whole device equals the image, mounts as iso9660 and
# its files match the host's checksums; after `del` the whole image is rescued ('+', one area).
. /scenarios/lib.sh

src=/tmp/a-src.iso
cache=/tmp/a-cache
cp "$ISO" "$src"
size=$(stat -c %s "$src")

# First session: nothing read but what the kernel reads when the disk appears (partition scan).
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
note "device $dev for $src"
name="${dev#/dev/}"
expect_eq "$name size in bytes" "$(($(cat /sys/block/$name/size) * 512))" "$size"
blkcache list | grep -q "$dev" || fail "blkcache list does not show $dev: $(blkcache list)"
must blkcache del "$dev"
[ -b "$dev" ] && fail "$dev still exists after del"
blkcache list | grep -q "$dev" && fail "blkcache list still shows $dev after del"
map="$(cache_map "$cache")" || exit 1
cp "$map" /tmp/a-map0
base="$(map_bytes /tmp/a-map0 +)"
note "cached by the partition scan: $base bytes in $(map_areas /tmp/a-map0 +) areas"

# Second session: one O_DIRECT read of 256 KiB at 2 MiB.
rpos=$((2 * 1048576))
rlen=$((256 * 1024))
expect_eq "cached bytes of the range before reading it" "$(map_bytes_in /tmp/a-map0 + $rpos $rlen)" 0
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
must dd if="$dev" of=/tmp/a-range bs=65536 skip=$((rpos / 65536)) count=$((rlen / 65536)) iflag=direct status=none
dd if="$src" of=/tmp/a-range.ref bs=65536 skip=$((rpos / 65536)) count=$((rlen / 65536)) status=none
must cmp /tmp/a-range /tmp/a-range.ref
must blkcache del "$dev"
expect_eq "cached bytes of the range" "$(map_bytes_in "$map" + $rpos $rlen)" "$rlen"
expect_eq "cached bytes in all (partition scan + range)" "$(map_bytes "$map" +)" $((base + rlen))
set -- $(status_json "$map" rescued)
expect_eq "blkcache status: rescued bytes" "$1" $((base + rlen))
expect_eq "blkcache status: rescued areas" "$2" "$(map_areas "$map" +)"
img="$(cache_image "$cache")" || exit 1
expect_cached_match "$map" "$img" "$src"

# Third session: everything, buffered (cmp) and through the file system.
dev="$(blk_add "$src" --cache "$cache")" || exit 1
cmp "$dev" "$src" || fail "$dev differs from $src"
expect_files_match "$dev" /mnt/a
must blkcache del "$dev"
map_expect "$map" "0 $size +"
must cmp "$img" "$src"
exit 0
