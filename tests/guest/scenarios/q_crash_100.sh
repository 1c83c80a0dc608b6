# q: crash at any moment, 100 times. A test-mode source (the ISO followed by 2 MiB of random bytes, damaged in
# two places inside that tail, 2 ms per read) is served while two readers run: random O_DIRECT reads of the whole
# device, each compared with the source, and a mounted iso9660 whose file checksums are checked in a loop. The
# daemon is killed with SIGKILL at a random moment 100 times; 9 kills in 10 are followed by `blkcache recover`
# (the mount stays and must keep working), every tenth by `del` and a fresh `add` of the same cache. Asserts: no
# reader ever saw a wrong byte; no read of a readable range failed; the file checksums held through every
# recover; afterwards every '+' byte of the map equals the source, '-' lies only inside the damage, every readable
# range reads back equal to the source and the damaged sectors fail. Prints the number of kills survived.
# guest-timeout: 900
. /scenarios/lib.sh

src=/tmp/q-src.img
cache=/tmp/q-cache
damage=/tmp/q-damage.map
ss=2048
kills=100
cp "$ISO" "$src"
head -c $((2 * 1024 * 1024)) /dev/urandom >> "$src"
size=$(stat -c %s "$src")
nsec=$((size / ss))
iso_sec=$(($(stat -c %s "$ISO") / ss))
bad1=$((iso_sec + 100)) bad1_n=4 # sectors [bad1, bad1 + 4) are damaged
bad2=$((iso_sec + 600))          # and sector bad2
hex() { printf '0x%08X' "$1"; }
{
    echo "# damage map for q_crash_100"
    echo "0x00000000     +               1"
    echo "$(hex 0)  $(hex $((bad1 * ss)))  +"
    echo "$(hex $((bad1 * ss)))  $(hex $((bad1_n * ss)))  -"
    echo "$(hex $(((bad1 + bad1_n) * ss)))  $(hex $(((bad2 - bad1 - bad1_n) * ss)))  +"
    echo "$(hex $((bad2 * ss)))  $(hex $ss)  -"
    echo "$(hex $(((bad2 + 1) * ss)))  $(hex $(((nsec - bad2 - 1) * ss)))  +"
} > "$damage"

# damaged FIRST COUNT: whether sectors [FIRST, FIRST + COUNT) touch the damage.
damaged() {
    [ $(($1 + $2)) -gt $bad1 ] && [ $1 -lt $((bad1 + bad1_n)) ] && return 0
    [ $(($1 + $2)) -gt $bad2 ] && [ $1 -le $bad2 ] && return 0
    return 1
}
# rnd N: a random number in [0, N).
rnd() { echo $(($(od -An -N4 -tu4 /dev/urandom) % $1)); }

add_dev() {
    blk_add "$src" --cache "$cache" --test-mode "$damage" --test-latency 2 --sector-size $ss > /tmp/q-dev || exit 1
}
add_dev
dev="$(cat /tmp/q-dev)"

# Random reader: 1..32 sectors at a random place, O_DIRECT, compared with the source. While /tmp/q-pause exists
# (a del and fresh add are under way) it acknowledges with /tmp/q-paused and waits; a read that fails then is not
# counted.
(
    n=0
    while [ ! -e /tmp/q-stop ]; do
        if [ -e /tmp/q-pause ]; then
            touch /tmp/q-paused
            sleep 0.05
            continue
        fi
        rm -f /tmp/q-paused
        c=$(($(rnd 32) + 1))
        s=$(rnd $((nsec - c)))
        d="$(cat /tmp/q-dev)"
        if dd if="$d" of=/tmp/q-rr.got bs=$ss skip=$s count=$c iflag=direct status=none 2> /tmp/q-rr.err; then
            dd if="$src" of=/tmp/q-rr.ref bs=$ss skip=$s count=$c status=none
            cmp /tmp/q-rr.got /tmp/q-rr.ref > /dev/null || echo "sectors $s+$c differ from the source" >> /tmp/q-wrong
            damaged $s $c && echo "sectors $s+$c read although damaged" >> /tmp/q-wrong
        elif [ ! -e /tmp/q-pause ] && ! damaged $s $c; then
            echo "sectors $s+$c failed: $(cat /tmp/q-rr.err)" >> /tmp/q-unexpected
        fi
        n=$((n + 1))
        echo $n > /tmp/q-reads
    done
) &
rreader=$!

# File reader on the mounted disc (the ISO part): checksums in a loop with the page cache dropped, until
# /tmp/q-fs-stop; it says it stopped with /tmp/q-fs-stopped.
start_fs_reader() {
    rm -f /tmp/q-fs-stop /tmp/q-fs-stopped
    mkdir -p /mnt/q
    must mount -t iso9660 -o ro "$(cat /tmp/q-dev)" /mnt/q
    (
        while [ ! -e /tmp/q-fs-stop ]; do
            (cd /mnt/q && sha256sum -c -s "$DATA/manifest.sha256") || echo "checksums differ or fail" >> /tmp/q-bad
            echo 3 > /proc/sys/vm/drop_caches
            r=$(($(cat /tmp/q-fs-rounds 2>/dev/null || echo 0) + 1))
            echo $r > /tmp/q-fs-rounds
        done
        touch /tmp/q-fs-stopped
    ) &
}
stop_fs_reader() {
    touch /tmp/q-fs-stop
    wait_for 120 test -e /tmp/q-fs-stopped
    must umount /mnt/q
}
start_fs_reader

daemon_pid() {
    p="$(pidof blkcache)"
    [ -n "$p" ] || fail "no blkcache daemon running"
    [ "$(echo $p | wc -w)" -eq 1 ] || fail "expected one blkcache process, found: $p"
    echo "$p"
}

recovers=0 fresh=0 k=0
while [ $k -lt $kills ]; do
    k=$((k + 1))
    # A random moment: 0 to 400 ms into the workload.
    sleep "0.$(printf '%03d' $(rnd 400))"
    pid="$(daemon_pid)"
    if [ $((k % 10)) -eq 0 ]; then
        stop_fs_reader
        kill -9 "$pid"
        touch /tmp/q-pause
        must timeout 60 blkcache del "$(cat /tmp/q-dev)"
        wait_for 60 test -e /tmp/q-paused
        add_dev
        rm -f /tmp/q-pause
        start_fs_reader
        fresh=$((fresh + 1))
    else
        kill -9 "$pid"
        # The daemon is gone when its pid is: recover must find the device waiting.
        i=0
        while kill -0 "$pid" 2> /dev/null; do
            i=$((i + 1))
            [ $i -gt 100 ] && fail "daemon $pid still alive 10 s after kill -9"
            sleep 0.1
        done
        [ -b "$(cat /tmp/q-dev)" ] || fail "$(cat /tmp/q-dev) vanished after kill $k (no user recovery?)"
        must timeout 60 blkcache recover "$(cat /tmp/q-dev)"
        recovers=$((recovers + 1))
    fi
    [ -e /tmp/q-wrong ] && fail "after kill $k a reader saw wrong bytes: $(head -n3 /tmp/q-wrong | tr '\n' ';')"
    [ -e /tmp/q-unexpected ] && fail "after kill $k a read of readable sectors failed: $(head -n3 /tmp/q-unexpected | tr '\n' ';')"
    [ -e /tmp/q-bad ] && fail "after kill $k the mounted file system failed its checksums"
done
# Both readers made progress through all of it, and go on after the last recover.
rounds="$(cat /tmp/q-fs-rounds)"
reads="$(cat /tmp/q-reads)"
wait_for 120 sh -c "[ \$(cat /tmp/q-fs-rounds) -gt $rounds ]"
wait_for 60 sh -c "[ \$(cat /tmp/q-reads) -gt $reads ]"
touch /tmp/q-stop
stop_fs_reader
wait $rreader
[ -e /tmp/q-wrong ] && fail "a reader saw wrong bytes: $(head -n3 /tmp/q-wrong | tr '\n' ';')"
[ -e /tmp/q-unexpected ] && fail "a read of readable sectors failed: $(head -n3 /tmp/q-unexpected | tr '\n' ';')"
[ -e /tmp/q-bad ] && fail "the mounted file system failed its checksums"
must blkcache del "$(cat /tmp/q-dev)"

map="$(cache_map "$cache")" || exit 1
img="$(cache_image "$cache")" || exit 1
expect_cached_match "$map" "$img" "$src"
map_runs_of "$map" - | while read -r pos len; do
    first=$((pos / ss)) n=$((len / ss))
    if [ $first -ge $bad1 ] && [ $((first + n)) -le $((bad1 + bad1_n)) ]; then continue; fi
    if [ $first -eq $bad2 ] && [ $n -eq 1 ]; then continue; fi
    echo "$pos $len"
done > /tmp/q-badruns
[ -s /tmp/q-badruns ] && fail "the map marks readable sectors bad: $(tr '\n' ';' < /tmp/q-badruns)"
note "after $kills kills: $(map_bytes "$map" +) bytes cached, $(cat /tmp/q-reads) random reads, $(cat /tmp/q-fs-rounds) checksum rounds"

# A last session: every readable range reads back equal to the source; damaged sectors fail.
add_dev
dev="$(cat /tmp/q-dev)"
expect_same_range "$dev" "$src" 0 $((bad1 * ss))
expect_same_range "$dev" "$src" $(((bad1 + bad1_n) * ss)) $(((bad2 - bad1 - bad1_n) * ss))
expect_same_range "$dev" "$src" $(((bad2 + 1) * ss)) $(((nsec - bad2 - 1) * ss))
for s in $bad1 $((bad1 + bad1_n - 1)) $bad2; do
    expect_read_fails "$dev" $ss $s > /dev/null || exit 1
done
must blkcache del "$dev"
expect_cached_match "$map" "$img" "$src"
result "survived $kills kills of the daemon ($recovers recovers, $fresh fresh adds)"
exit 0
