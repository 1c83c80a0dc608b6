# l: a cache hit completes while a slow miss is pending on another tag. The source reads with 1 s of latency
# (`--test-latency 1000`); while an O_DIRECT miss is in flight (the block layer counts it in
# /sys/block/ublkbN/inflight), an O_DIRECT read of a cached range returns the right bytes and the miss is still in
# flight afterwards; then the miss completes with the right bytes. The daemon read the media once.
. /scenarios/lib.sh

src=/tmp/l-src.iso
cache=/tmp/l-cache
cp "$ISO" "$src"
hpos=$((1024 * 1024))
hlen=$((64 * 1024))
mpos=$((4 * 1024 * 1024))
mlen=$((64 * 1024))

# Session 1, no latency: cache the range that will be hit (and what the partition scan reads).
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
expect_same_range "$dev" "$src" $hpos $hlen
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
expect_eq "cached bytes of the hit range" "$(map_bytes_in "$map" + $hpos $hlen)" $hlen
expect_eq "cached bytes of the miss range" "$(map_bytes_in "$map" + $mpos $mlen)" 0

# Session 2: every source read takes 1 s (the identity read at start-up too: `add` takes about 2 s).
dev="$(blk_add "$src" --cache "$cache" --read-ahead off --test-latency 1000)" || exit 1
name="${dev#/dev/}"
expect_eq "reads in flight on $name before the miss" "$(dev_inflight_reads "$name")" 0
rm -f /tmp/l-miss
dd if="$dev" of=/tmp/l-miss bs=$mlen skip=$((mpos / mlen)) count=1 iflag=direct status=none &
miss=$!
wait_for 10 reads_in_flight "$name"
# The hit, while the miss is pending.
expect_same_range "$dev" "$src" $hpos $hlen
inflight="$(dev_inflight_reads "$name")"
kill -0 "$miss" 2> /dev/null || fail "the slow miss finished before the hit did: the hit waited for it"
[ "$inflight" -ge 1 ] || fail "no read in flight on $name after the hit: the hit waited for the miss"
[ -s /tmp/l-miss ] && fail "the slow miss wrote its output before the hit finished"
note "hit done with $inflight read(s) in flight"
wait "$miss" || fail "the slow miss failed"
range_of "$src" $mpos $mlen /tmp/l-miss.ref
cmp /tmp/l-miss /tmp/l-miss.ref > /dev/null || fail "the slow miss returned wrong bytes"
must blkcache del "$dev"
expect_eq "media reads in session 2 (the one miss)" "$(daemon_counter "$cache/daemon.log" media_reads)" 1
expect_eq "cached bytes of the miss range after session 2" "$(map_bytes_in "$map" + $mpos $mlen)" $mlen
exit 0
