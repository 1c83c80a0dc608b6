# j: test mode. The ISO behind a ddrescue-format damage map (`--test-mode MAP --test-latency MS`, 2048-byte
# sectors): sectors 512..515 and 1000 are damaged and read, sector 2000 is damaged and never read. Damaged sectors
# fail, every other sector reads right; the cache map marks exactly the damaged sectors read '-' (sector 2000 stays
# untried); in a second session on the same cache, re-reading them fails again without reaching the media (the
# daemon's media_reads counter stays 0) and the map's figures do not move. With --on-bad-sector zero the same
# sectors read as zeros, `list` says so, and the map is unchanged. A head that degrades later (sector 3 bad) still
# finds the cache by the sectors that read and the volume descriptor, `add` says so, and sector 3 is served.
. /scenarios/lib.sh

src=/tmp/j-src.iso
cache=/tmp/j-cache
damage=/tmp/j-damage.map
cp "$ISO" "$src"
size=$(stat -c %s "$src")
ss=2048
nsec=$((size / ss))
expect_eq "ISO size is whole sectors" $((nsec * ss)) "$size"

# The damage map, as ddrescue writes one: '+' readable, '-' damaged.
hex() { printf '0x%08X' "$1"; }
{
    echo "# Mapfile. Created by hand for blkcache's guest test j_test_mode"
    echo "# current_pos  current_status  current_pass"
    echo "0x00000000     +               1"
    echo "#      pos        size  status"
    echo "$(hex 0)  $(hex $((512 * ss)))  +"
    echo "$(hex $((512 * ss)))  $(hex $((4 * ss)))  -"
    echo "$(hex $((516 * ss)))  $(hex $((484 * ss)))  +"
    echo "$(hex $((1000 * ss)))  $(hex $ss)  -"
    echo "$(hex $((1001 * ss)))  $(hex $((999 * ss)))  +"
    echo "$(hex $((2000 * ss)))  $(hex $ss)  -"
    echo "$(hex $((2001 * ss)))  $(hex $(((nsec - 2001) * ss)))  +"
} > "$damage"
set -- $(status_json "$damage" bad_sector)
expect_eq "blkcache status of the damage map: bad bytes" "$1" $((6 * ss))

dev="$(blk_add "$src" --cache "$cache" --read-ahead off --test-mode "$damage" --test-latency 1 --sector-size $ss)" || exit 1
expect_eq "logical block size of $dev" "$(cat /sys/block/${dev#/dev/}/queue/logical_block_size)" $ss

# good_ranges: every good sector except the 64 KiB block [1984, 2016) around the untouched sector 2000, as
# "first count" in sectors, split so each piece reads with the largest aligned block.
good_ranges="0 512
516 28
544 448
992 8
1001 23
1024 960
2016 1088
3104 $((nsec - 3104))"
echo "$good_ranges" | while read -r first count; do
    expect_same_range "$dev" "$ISO" $((first * ss)) $((count * ss))
done || exit 1
for s in 512 513 514 515 1000; do
    why="$(expect_read_fails "$dev" $ss $s)" || exit 1
    note "damaged sector $s: $why"
done
# A 64 KiB request holding sector 1000 fails whole.
expect_read_fails "$dev" 65536 $((992 * ss / 65536)) > /dev/null || exit 1
must blkcache del "$dev"

map="$(cache_map "$cache")" || exit 1
expect_eq "bad runs" "$(map_runs_of "$map" - | tr '\n' ';')" "$((512 * ss)) $((4 * ss));$((1000 * ss)) $ss;"
expect_eq "rescued bytes" "$(map_bytes "$map" +)" $(((nsec - 5 - 32) * ss))
expect_eq "status of the damaged sector never read" "$(map_status_at "$map" $((2000 * ss)))" "?"
img="$(cache_image "$cache")" || exit 1
expect_cached_match "$map" "$img" "$ISO"
rescued0="$(status_json "$map" rescued)"
bad0="$(status_json "$map" bad_sector)"
note "after the first session: rescued $rescued0, bad $bad0 (bytes areas)"
expect_eq "blkcache status: bad-sector bytes and areas" "$bad0" "$((5 * ss)) 2"

# Second session: known-bad sectors fail without a media read; cached ones are hits.
dev="$(blk_add "$src" --cache "$cache" --read-ahead off --test-mode "$damage" --test-latency 1 --sector-size $ss)" || exit 1
for s in 512 513 514 515 1000 512; do
    expect_read_fails "$dev" $ss $s > /dev/null || exit 1
done
expect_same_range "$dev" "$ISO" $((516 * ss)) $((28 * ss))
expect_same_range "$dev" "$ISO" $((1001 * ss)) $((23 * ss))
must blkcache del "$dev"
log="$cache/daemon.log"
expect_eq "media reads in the second session" "$(daemon_counter "$log" media_reads)" 0
expect_eq "failed requests in the second session" "$(daemon_counter "$log" errors)" 6
expect_eq "rescued after the second session" "$(status_json "$map" rescued)" "$rescued0"
expect_eq "bad sectors after the second session" "$(status_json "$map" bad_sector)" "$bad0"

# Third session, --bad-retries 1: each request for a known-bad sector reads it once more (still bad here).
dev="$(blk_add "$src" --cache "$cache" --read-ahead off --test-mode "$damage" --sector-size $ss --bad-retries 1)" || exit 1
expect_read_fails "$dev" $ss 1000 > /dev/null || exit 1
expect_read_fails "$dev" $ss 1000 > /dev/null || exit 1
expect_same_range "$dev" "$ISO" $((1001 * ss)) $((23 * ss))
must blkcache del "$dev"
expect_eq "media reads with --bad-retries 1" "$(daemon_counter "$log" media_reads)" 2
expect_eq "bad sectors after the retries" "$(status_json "$map" bad_sector)" "$bad0"

# Fourth session, --on-bad-sector zero: known-bad sectors read as zeros, the rest as before, same map.
dev="$(blk_add "$src" --cache "$cache" --read-ahead off --test-mode "$damage" --sector-size $ss --on-bad-sector zero)" || exit 1
for s in 512 1000; do
    dd if="$dev" of=/tmp/j-zero bs=$ss skip=$s count=1 iflag=direct 2>/dev/null \
        || fail "--on-bad-sector zero: reading bad sector $s failed"
    cmp -n $ss /tmp/j-zero /dev/zero || fail "--on-bad-sector zero: bad sector $s is not zeros"
done
dd if="$dev" of=/tmp/j-zero bs=65536 skip=$((992 * ss / 65536)) count=1 iflag=direct 2>/dev/null \
    || fail "--on-bad-sector zero: a 64 KiB read over sector 1000 failed"
expect_same_range "$dev" "$ISO" $((1001 * ss)) $((23 * ss))
blkcache list --json | grep -q '"on_bad_sector": "zero"' || fail "list does not say on_bad_sector zero"
blkcache status "$dev" > /tmp/j-status.txt || fail "status $dev failed"
grep -q "bad sectors read as zeros" /tmp/j-status.txt || fail "status $dev does not say bad sectors read as zeros: $(cat /tmp/j-status.txt)"
must blkcache del "$dev"
expect_eq "bad sectors with --on-bad-sector zero" "$(status_json "$map" bad_sector)" "$bad0"

# Fifth session: the disc's start degraded (sector 3 of its first 64 KiB bad too). The cache is found by the head
# sectors that still read and the volume descriptor, `add` says so, and sector 3 is served from the cache.
{
    echo "# current_pos  current_status  current_pass"
    echo "0x00000000     +               1"
    echo "#      pos        size  status"
    echo "$(hex 0)  $(hex $((3 * ss)))  +"
    echo "$(hex $((3 * ss)))  $(hex $ss)  -"
    echo "$(hex $((4 * ss)))  $(hex $(((nsec - 4) * ss)))  +"
} > /tmp/j-head.map
dev="$(blk_add "$src" --cache "$cache" --test-mode /tmp/j-head.map --sector-size $ss)" || exit 1
said="blkcache: $cache: cache found by the readable sectors of the head (31 of 32) and the volume descriptor 'BLKCACHE_TEST'"
grep -qxF "$said" /tmp/add.err || fail "add did not say how it found the cache: $(cat /tmp/add.err)"
expect_same_range "$dev" "$ISO" 0 65536
must blkcache del "$dev"
exit 0
