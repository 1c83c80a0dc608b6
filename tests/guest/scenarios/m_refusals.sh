# m: refusals, each with a clear error and nothing lost. A second `add` of a cache being served (same or default
# cache, online or offline); `add` of a missing source or an impossible sector size (no cache directory left behind);
# `add` without root (one line saying so); a cache of disc A given with disc B (other size, same size but other first
# 64 KiB, other sector size): refused and A's cache files byte-identical afterwards; a garbage line in a cache's
# mapfile: a one-line error naming file and line, the file untouched; writes to the device fail and change nothing;
# `del` of no device. Also: the default cache is found again for the same disc (and refuses a second add while
# served), and it and /var/lib/blkcache are 0700 with 0600 files under umask 022.
. /scenarios/lib.sh

src=/tmp/m-a.iso
cache=/tmp/m-cache
cp "$ISO" "$src"
src_sum="$(sha256sum < "$src")"

# one_device N: blkcache list shows N devices.
one_device() {
    got="$(blkcache list --json | grep -c '"device"')"
    expect_eq "blkcache devices" "$got" "$1"
}

# --- Disc A with a cache holding a range.
dev="$(blk_add "$src" --cache "$cache")" || exit 1
expect_same_range "$dev" "$src" $((1024 * 1024)) $((128 * 1024))

# A second add of the cache being served: refused, the first device goes on serving.
why="$(expect_fails_with "second add of $cache" "in use" blkcache add "$src" --cache "$cache")" || exit 1
note "second add: $why"
why="$(expect_fails_with "offline add of $cache while served" "in use" blkcache add --offline "$cache")" || exit 1
note "offline add while served: $why"
one_device 1
expect_same_range "$dev" "$src" $((1024 * 1024)) $((128 * 1024))

# Writes fail, and change neither the source nor what is cached.
name="${dev#/dev/}"
expect_eq "/sys/block/$name/ro" "$(cat /sys/block/$name/ro)" 1
expect_eq "blockdev --getro $dev" "$(blockdev --getro "$dev")" 1
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
# (A save rewrites the mapfile's "Current time" comment: compare its runs, and the other files' bytes; an add
# refreshes the drive record in blkcache.json: compare its other lines.)
tree_sums "$cache" | grep -v 'daemon.log\|mapfile\|blkcache.json' > /tmp/m-sums.before
grep -v '_seen\|"uses"' "$cache/blkcache.json" >> /tmp/m-sums.before
map_runs "$map" >> /tmp/m-sums.before
dev="$(blk_add "$src" --cache "$cache" --read-ahead off)" || exit 1
dd if=/dev/zero of="$dev" bs=512 count=1 oflag=direct status=none 2> /tmp/m-w1 \
    && fail "an O_DIRECT write to $dev succeeded"
note "O_DIRECT write: $(tail -n1 /tmp/m-w1)"
dd if=/dev/zero of="$dev" bs=65536 seek=2 count=1 conv=notrunc status=none 2> /tmp/m-w2 && sync \
    && fail "a buffered write (and sync) to $dev succeeded"
note "buffered write: $(tail -n1 /tmp/m-w2)"
must blkcache del "$dev"
expect_eq "source checksum after writes" "$(sha256sum < "$src")" "$src_sum"
tree_sums "$cache" | grep -v 'daemon.log\|mapfile\|blkcache.json' > /tmp/m-sums.after
grep -v '_seen\|"uses"' "$cache/blkcache.json" >> /tmp/m-sums.after
map_runs "$map" >> /tmp/m-sums.after
cmp /tmp/m-sums.before /tmp/m-sums.after > /dev/null \
    || fail "the cache changed across refused writes: $(diff /tmp/m-sums.before /tmp/m-sums.after | tr '\n' ' ')"

# --- Missing source, impossible sector size: refused before any cache directory exists.
why="$(expect_fails_with "add of a missing source" "cannot find source /tmp/m-missing.iso" \
    blkcache add /tmp/m-missing.iso --cache /tmp/m-none)" || exit 1
note "missing source: $why"
[ -e /tmp/m-none ] && fail "add of a missing source created /tmp/m-none"
why="$(expect_fails_with "add with 8192-byte sectors" "8192-byte sectors" \
    blkcache add "$src" --cache /tmp/m-none --sector-size 8192)" || exit 1
note "8192-byte sectors: $why"
[ -e /tmp/m-none ] && fail "add with an impossible sector size created /tmp/m-none"
one_device 0

# --- Not root (a user namespace: no CAP_SYS_ADMIN for the ublk driver): one line saying so.
why="$(expect_fails_with "add without root" "serving a device needs root" \
    unshare -U blkcache add "$src" --cache /tmp/m-noroot)" || exit 1
# (Log lines may come first: no private mount namespace, the new cache; the error is one line, its cause once.)
expect_eq "error lines of add without root" "$(echo "$why" | grep -c '^blkcache: error:')" 1
expect_eq "the error of add without root" "$(echo "$why" | grep '^blkcache: error:')" \
    "blkcache: error: ublk add device failed: Operation not permitted (os error 1); serving a device needs root"
note "not root: $(echo "$why" | tail -n1)"
one_device 0
rm -rf /tmp/m-noroot

# --- Disc A's cache given with another disc: refused, A's cache byte-identical (its log included).
tree_sums "$cache" > /tmp/m-sums.before
why="$(expect_fails_with "disc B (other size) with A's cache" "refusing to reuse" \
    blkcache add "$DATA/other.iso" --cache "$cache")" || exit 1
note "other size: $why"
case "$why" in *"$cache"*) ;; *) fail "the size refusal does not name the cache: $why" ;; esac
cp "$src" /tmp/m-b.iso
printf 'B' | dd of=/tmp/m-b.iso bs=1 seek=40000 conv=notrunc status=none # inside the first 64 KiB
why="$(expect_fails_with "disc B (same size, other first 64 KiB) with A's cache" "refusing to reuse" \
    blkcache add /tmp/m-b.iso --cache "$cache")" || exit 1
note "other identity: $why"
why="$(expect_fails_with "disc A with 2048-byte sectors and A's 512-byte cache" "sector size" \
    blkcache add "$src" --cache "$cache" --sector-size 2048)" || exit 1
note "other sector size: $why"
one_device 0
tree_sums "$cache" > /tmp/m-sums.after
cmp /tmp/m-sums.before /tmp/m-sums.after > /dev/null \
    || fail "A's cache changed after the refusals: $(diff /tmp/m-sums.before /tmp/m-sums.after | tr '\n' ' ')"
# And A still serves what it had.
dev="$(blk_add "$src" --cache "$cache")" || exit 1
expect_same_range "$dev" "$ISO" $((1024 * 1024)) $((128 * 1024))
must blkcache del "$dev"

# --- A garbage line in the mapfile: one line naming the file and the line, for add, add --offline and status.
lines=$(wc -l < "$map")
echo "0x00010000  banana  +" >> "$map"
bad_line=$((lines + 1))
cp "$map" /tmp/m-map.garbage
tree_sums "$cache" | grep -v daemon.log > /tmp/m-sums.before
for cmd in "add $src --cache $cache" "add --offline $cache" "status $map"; do
    blkcache $cmd > /tmp/m-out 2> /tmp/m-err && fail "blkcache $cmd accepted a garbage mapfile"
    expect_eq "stderr lines of blkcache $cmd" "$(wc -l < /tmp/m-err)" 1
    grep -q "$map:$bad_line" /tmp/m-err || fail "blkcache $cmd does not name $map:$bad_line: $(cat /tmp/m-err)"
    note "$cmd: $(cat /tmp/m-err)"
done
one_device 0
cmp "$map" /tmp/m-map.garbage > /dev/null || fail "the garbage mapfile was rewritten"
tree_sums "$cache" | grep -v daemon.log > /tmp/m-sums.after
cmp /tmp/m-sums.before /tmp/m-sums.after > /dev/null || fail "the cache changed after the garbage-map refusals"

# --- The default cache (root: under /var/lib/blkcache): the same disc again finds the same cache, and a second
# add while it is served is refused there too.
umask 022
blkcache add "$src" --json > /tmp/m-j1 2> /tmp/m-err || fail "add $src (default cache): $(cat /tmp/m-err)"
dcache="$(sed -n 's/.*"cache":"\([^"]*\)".*/\1/p' /tmp/m-j1)"
case "$dcache" in /var/lib/blkcache/?*) ;; *) fail "default cache of $src is '$dcache', not under /var/lib/blkcache" ;; esac
dev="$(sed -n 's/.*"device":"\([^"]*\)".*/\1/p' /tmp/m-j1)"
expect_same_range "$dev" "$src" 0 65536
# Private whatever the umask (the add above ran with umask 022): directories 0700, files 0600.
for f in /var/lib/blkcache "$dcache"; do expect_eq "mode of $f" "$(stat -c %a "$f")" 700; done
for f in image mapfile blkcache.json daemon.log; do expect_eq "mode of $dcache/$f" "$(stat -c %a "$dcache/$f")" 600; done
why="$(expect_fails_with "second add of $src (default cache)" "in use" blkcache add "$src")" || exit 1
must blkcache del "$src"
blkcache add "$src" --json > /tmp/m-j2 2> /tmp/m-err || fail "add $src again (default cache): $(cat /tmp/m-err)"
expect_eq "default cache the second time" "$(sed -n 's/.*"cache":"\([^"]*\)".*/\1/p' /tmp/m-j2)" "$dcache"
must blkcache del "$src"
expect_eq "bytes cached in the default cache" "$(map_bytes_in "$(cache_map "$dcache")" + 0 65536)" 65536
rm -rf "$dcache"

# --- del of a device that does not exist.
why="$(expect_fails_with "del of no device" "no blkcache device for /dev/ublkb7" blkcache del /dev/ublkb7)" || exit 1
note "del: $(echo "$why" | head -n1)"
exit 0
