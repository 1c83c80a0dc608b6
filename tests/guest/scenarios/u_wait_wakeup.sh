# u: a request waiting for another request's slow miss of the same bytes sleeps until that miss lands; it is woken
# by the release, not by polling. The source reads with 4 s of latency (`--test-latency 4000`, one queue); an
# O_DIRECT miss of a 64 KiB range is in flight, a second O_DIRECT read of the same range waits on its claim. Over
# 2 s of that wait the daemon's threads are switched in fewer than 100 times in all (a 1 ms poll is ~2000); then
# both reads return the source's bytes and the media was read once.
. /scenarios/lib.sh

src=/tmp/u-src.iso
cache=/tmp/u-cache
cp "$ISO" "$src"
pos=$((4 * 1024 * 1024))
len=$((64 * 1024))
# Session 1, no latency: the partition scan's reads are cached, so session 2's only media read is the miss.
dev="$(blk_add "$src" --cache "$cache")" || exit 1
must blkcache del "$dev"
dev="$(blk_add "$src" --cache "$cache" --read-ahead off --test-latency 4000 --queues 1)" || exit 1
name="${dev#/dev/}"
pid="$(pidof blkcache)" || fail "no blkcache daemon running"

# switches: context switches of all the daemon's threads so far (voluntary and not).
switches() {
    cat /proc/"$pid"/task/*/status 2> /dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'
}
dd if="$dev" of=/tmp/u-first bs=$len skip=$((pos / len)) count=1 iflag=direct status=none &
first=$!
wait_for 10 reads_in_flight "$name"
dd if="$dev" of=/tmp/u-second bs=$len skip=$((pos / len)) count=1 iflag=direct status=none &
second=$!
wait_for 10 sh -c "[ \$(awk '{ print \$1 }' /sys/block/$name/inflight) -ge 2 ]"
before="$(switches)"
sleep 2
after="$(switches)"
kill -0 "$first" 2> /dev/null || fail "the slow miss ended within the measured window (latency too short)"
kill -0 "$second" 2> /dev/null || fail "the waiting read ended before the miss it waits for"
switched=$((after - before))
note "daemon context switches over 2 s while a read waited on another's miss: $switched"
[ "$switched" -lt 100 ] || fail "the daemon was switched in $switched times in 2 s while a request waited: it polls"
wait "$first" || fail "the slow miss failed"
wait "$second" || fail "the waiting read failed"
range_of "$src" $pos $len /tmp/u-ref
cmp /tmp/u-first /tmp/u-ref > /dev/null || fail "the slow miss returned wrong bytes"
cmp /tmp/u-second /tmp/u-ref > /dev/null || fail "the waiting read returned wrong bytes"
must blkcache del "$dev"
expect_eq "media reads (one miss shared by both requests)" "$(daemon_counter "$cache/daemon.log" media_reads)" 1
exit 0
