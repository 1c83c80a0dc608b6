# e: 4 concurrent O_DIRECT readers of one 1 MiB region of the emulated CD. Every reader gets the image's bytes, and
# each sector is read from the drive once: the bytes the drive delivered (sr0's sectors-read counter) equal the
# bytes newly cached in the mapfile, and a second round of readers does not reach the drive at all.
. /scenarios/lib.sh

cache=/tmp/e-cache
# Session 0: what the kernel reads when the disk appears (partition scan), so it can be told apart.
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
must blkcache del "$dev"
map="$(cache_map "$cache")" || exit 1
base="$(map_bytes "$map" +)"

pos=$((2 * 1048576))
len=1048576
expect_eq "cached bytes of the region before" "$(map_bytes_in "$map" + $pos $len)" 0
dd if="$ISO" of=/tmp/e-ref bs=4096 skip=$((pos / 4096)) count=$((len / 4096)) status=none
dev="$(blk_add /dev/sr0 --cache "$cache" --read-ahead off)" || exit 1
s0="$(dev_sectors sr0)"
round() { # readers write /tmp/e-out.N; different block sizes so requests overlap unevenly
    for n in 1 2 3 4; do
        bs=$((2048 << n))
        dd if="$dev" of="/tmp/e-out.$n" bs=$bs skip=$((pos / bs)) count=$((len / bs)) iflag=direct status=none \
            2> "/tmp/e-err.$n" &
    done
    wait
    for n in 1 2 3 4; do
        [ -s "/tmp/e-err.$n" ] && fail "reader $n: $(cat /tmp/e-err.$n)"
        cmp "/tmp/e-out.$n" /tmp/e-ref || fail "reader $n got other bytes than the image"
    done
    return 0
}
round
s1="$(dev_sectors sr0)"
round
s2="$(dev_sectors sr0)"
expect_eq "sr0 sectors read by a second round (all hits)" "$s2" "$s1"
must blkcache del "$dev"
cached=$(($(map_bytes "$map" +) - base))
note "drive delivered $(((s1 - s0) * 512)) bytes; newly cached $cached bytes; region $len bytes"
expect_eq "bytes read from the drive vs bytes newly cached" "$(((s1 - s0) * 512))" "$cached"
expect_eq "cached bytes of the region" "$(map_bytes_in "$map" + $pos $len)" "$len"
expect_cached_match "$map" "$(cache_image "$cache")" "$ISO"
exit 0
