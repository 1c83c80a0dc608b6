# i: `blkcache add --offline CACHE` (the cache directory as the only argument, no source anywhere). Sectors cached in
# an earlier session read byte-exact; uncached ones, and a request that is only partly cached, fail with EIO; the
# offline session marks nothing (map runs and image unchanged, no bad sectors). A fully cached disc mounts offline
# and its files match the host's checksums.
. /scenarios/lib.sh

src=/tmp/i-src.iso
cache=/tmp/i-cache
cp "$ISO" "$src"
r1pos=$((1024 * 1024))
r1len=$((192 * 1024))
r2pos=$((3 * 1024 * 1024))
r2len=$((64 * 1024))

# Online session: cache two ranges.
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
expect_same_range "$dev" "$src" $r1pos $r1len
expect_same_range "$dev" "$src" $r2pos $r2len
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
img="$(cache_image "$cache")" || exit 1
expect_eq "cached bytes of range 1" "$(map_bytes_in "$map" + $r1pos $r1len)" $r1len
expect_eq "cached bytes of range 2" "$(map_bytes_in "$map" + $r2pos $r2len)" $r2len
for pos in $((4 * 1048576)) $((5 * 1048576)) $((r1pos + r1len)); do
    expect_eq "cached bytes at $pos before going offline" "$(map_bytes_in "$map" + $pos 65536)" 0
done
map_runs "$map" > /tmp/i-runs.before
img_sum="$(sha256sum < "$img")"

# The source is gone: serve the cache alone.
rm -f "$src"
dev="$(blkcache add --offline "$cache" 2> /tmp/i-add.err)" || fail "add --offline $cache: $(cat /tmp/i-add.err)"
[ -b "$dev" ] || fail "add --offline printed '$dev', not a block device"
blkcache list --json | tr -d ' \n' | grep -q "\"device\":\"$dev\",\"id\":[0-9]*,\"source\":null" \
    || fail "blkcache list --json does not show $dev as offline: $(blkcache list --json)"
# Cached: byte-exact, read twice (the second time nothing new can be involved).
expect_same_range "$dev" "$ISO" $r1pos $r1len
expect_same_range "$dev" "$ISO" $r2pos $r2len
expect_same_range "$dev" "$ISO" $r1pos $r1len
# Uncached: EIO, each time asked.
for pos in $((4 * 1048576)) $((5 * 1048576)) $((4 * 1048576)); do
    expect_direct_error "$dev" 65536 $((pos / 65536)) "Input/output error"
done
# One 128 KiB request, its first half cached and its second half not: fails whole.
expect_direct_error "$dev" 131072 $(((r1pos + 131072) / 131072)) "Input/output error"
# The cached half still reads.
expect_same_range "$dev" "$ISO" $((r1pos + 131072)) 65536
must blkcache del "$dev"
[ -b "$dev" ] && fail "$dev still exists after del"

# Nothing was marked: same runs, no bad sectors, same image.
map_runs "$map" > /tmp/i-runs.after
cmp /tmp/i-runs.before /tmp/i-runs.after > /dev/null \
    || fail "the offline session changed the map: [$(tr '\n' ';' < /tmp/i-runs.before)] -> [$(tr '\n' ';' < /tmp/i-runs.after)]"
expect_eq "bad-sector areas after the offline session" "$(map_areas "$map" -)" 0
set -- $(status_json "$map" bad_sector)
expect_eq "blkcache status: bad-sector bytes" "$1" 0
expect_eq "image checksum after the offline session" "$(sha256sum < "$img")" "$img_sum"

# A fully cached disc works offline as the disc did: mount and check every file.
full=/tmp/i-full
cp "$ISO" "$src"
dev="$(blk_add "$src" --cache "$full")" || exit 1
cmp "$dev" "$ISO" || fail "$dev differs from the ISO"
must blkcache del "$dev"
map_expect "$(cache_map "$full")" "0 $(stat -c %s "$ISO") +"
rm -f "$src"
dev="$(blkcache add --offline "$full" 2> /tmp/i-add.err)" || fail "add --offline $full: $(cat /tmp/i-add.err)"
expect_files_match "$dev" /mnt/i
must blkcache del "$dev"
exit 0
