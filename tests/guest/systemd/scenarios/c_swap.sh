# Swap -> the new disc, by itself: with disc A served and partly read, a quick swap to disc B (forced eject and
# change at once, one change uevent with a disc present) ends A's daemon with A's map saved and starts one for B:
# /dev/blkcache/sr0 serves B's bytes from B's own cache, and no byte of B is in A's cache. Re-inserting A resumes
# A's cache: the sectors read before are not read from the drive again (sr0's read count).
# boot-disc: none
# install: scenario

note "disc A served; its first MiB read"
devA="$(serve "$ISO_A")"
read_direct "$LINK" 0 1048576 || fail "read of A through $LINK failed"
cacheA="$(cache_of "$ISO_A")" || fail "no cache for disc A in $CACHES"
restarts=$(unit_restarts)

note "quick swap to disc B"
insert "$ISO_B"
wait_for 40 link_serves "$ISO_B"
devB="$(served_dev)"
cmp "$LINK" "$ISO_B" || fail "$LINK ($devB) differs from disc B"
cacheB="$(cache_of "$ISO_B")" || fail "no cache for disc B in $CACHES"
[ "$cacheB" != "$cacheA" ] || fail "discs A and B share the cache $cacheA"
unit_is "$UNIT" active || fail "$UNIT is $(unit_state "$UNIT") after the swap"
[ "$(unit_restarts)" -gt "$restarts" ] || fail "$UNIT was not restarted for disc B"
journal_has 4 "the disc was changed or removed" || fail "no warning (priority 4) about the disc change in the journal"

note "A's map saved; A's cache holds only A's bytes, B's (served) only B's"
a_bytes="$(expect_cache_holds "$cacheA" "$ISO_A")" || exit 1
[ "$a_bytes" -ge 1048576 ] || fail "A's map holds $a_bytes bytes as read, want at least the 1 MiB read before the swap"
expect_cache_holds "$cacheB" "$ISO_B" live > /dev/null || exit 1

note "swap back to A: its cache resumes"
insert "$ISO_A"
wait_for 40 link_serves "$ISO_A"
udevadm settle
expect_eq "A's cache directory" "$(cache_of "$ISO_A")" "$cacheA"
before=$(sr0_reads)
read_direct "$LINK" 0 1048576 || fail "read of A's first MiB failed"
after=$(sr0_reads)
expect_eq "sr0 reads for A's first MiB, read before the swap" "$after" "$before"
cmp "$LINK" "$ISO_A" || fail "$LINK differs from disc A after the swap back"

note "B's map saved when it was swapped out: the whole disc, B's bytes only"
b_bytes="$(expect_cache_holds "$cacheB" "$ISO_B")" || exit 1
expect_eq "B's cached bytes (the whole disc was read)" "$b_bytes" "$(stat -c %s "$ISO_B")"
expect_cache_holds "$cacheA" "$ISO_A" live > /dev/null || exit 1
