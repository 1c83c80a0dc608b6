# s: the cache on a small tmpfs (3 MiB) that fills up while a program reads the whole ISO (~6 MiB) through the
# device: every byte read equals the ISO (twice: the second pass mixes cached and uncached bytes), `blkcache list`
# shows the cache as full (table and --json), the map saved on that full disk claims only bytes the image holds
# (some, not all), and a second session on the still-full disk serves right bytes and keeps the map.
. /scenarios/lib.sh

src=/tmp/s-src.iso
disk=/tmp/s-disk
cp "$ISO" "$src"
size=$(stat -c %s "$src")
mkdir -p "$disk"
must mount -t tmpfs -o size=3m blkcache-full "$disk"
cache="$disk/cache"

dev="$(blk_add "$src" --cache "$cache")" || exit 1
cmp "$dev" "$src" || fail "$dev differs from $src while the cache disk fills up"
# The daemon publishes its cache health within a second.
wait_for 10 sh -c "blkcache list | grep '$dev' | grep -q 'cache full'"
blkcache list
blkcache list --json | grep -q '"cache_state": "full"' \
    || fail "list --json does not say full: $(blkcache list --json | tr '\n' ' ')"
blkcache list --json | grep -q '"cache_error": "no space left' \
    || fail "list --json does not say why: $(blkcache list --json | tr '\n' ' ')"
df -k "$disk"
drop_caches
cmp "$dev" "$src" || fail "$dev differs from $src on a second pass over a full cache"
must blkcache del "$dev"

map="$(cache_map "$cache")" || exit 1
img="$(cache_image "$cache")" || exit 1
cached=$(map_bytes "$map" +)
note "cached $cached of $size bytes on a 3 MiB disk"
[ "$cached" -gt 0 ] || fail "nothing cached"
[ "$cached" -lt "$size" ] || fail "all $size bytes cached on a 3 MiB disk?"
expect_cached_match "$map" "$img" "$src"

# A second session on the still-full disk.
dev="$(blk_add "$src" --cache "$cache")" || exit 1
cmp "$dev" "$src" || fail "$dev differs from $src in the second session"
must blkcache del "$dev"
expect_cached_match "$map" "$img" "$src"
[ "$(map_bytes "$map" +)" -ge "$cached" ] || fail "the second session lost cached bytes"
must umount "$disk"
exit 0
