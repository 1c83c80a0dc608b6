# Helpers for guest scenarios (busybox sh). Sourced by each scenario: `. /scenarios/lib.sh`.
# Also run by init between scenarios as `sh /scenarios/lib.sh cleanup`.
# Holds assertions, drive read counters, scsi_debug set-up, mapfile parsing and blkcache wrappers.
# Must never hide a failure: every helper that cannot do its job calls fail.

DATA=/data                 # test data from the host: test.iso, manifest.sha256 (files inside the ISO)
ISO="$DATA/test.iso"

# fail WHY: record the reason for init's result line and stop the scenario.
fail() {
    echo "FAIL: $*" >&2
    echo "$*" > /tmp/fail-reason
    # The daemons' side of the story, for the console: logs written during this scenario.
    for log in $(find /tmp -name daemon.log -newer /tmp/scenario-start 2>/dev/null); do
        tail -n 15 "$log" | sed "s|^|    $log: |" >&2
    done
    exit 1
}

note() { echo "  [${SCENARIO:-?}] $*"; }

# result TEXT: a figure the scenario reports; run.sh shows RESULT lines even without -v.
result() { echo "RESULT [${SCENARIO:-?}] $*"; }

# must CMD...: run CMD, fail naming it when it fails.
must() {
    "$@" || fail "command failed ($?): $*"
}

# expect_eq WHAT GOT WANT
expect_eq() {
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

# host_cmd MONITOR-COMMAND: ask the host to run a QEMU monitor command (run.sh reads "HOSTCMD ..." from the
# console). The CD drive is "cd0"; @DATA@ is the host's copy of /data. E.g. host_cmd "eject -f cd0",
# host_cmd "change cd0 @DATA@/other.iso raw read-only". Asynchronous: poll for the effect (wait_for).
host_cmd() {
    echo "HOSTCMD $*" > /dev/console
}

# wait_for SECS CMD...: run CMD every 0.2 s until it succeeds; fail after SECS.
wait_for() {
    w_end=$(($1 * 5))
    shift
    w_i=0
    until "$@" > /dev/null 2>&1; do
        w_i=$((w_i + 1))
        [ $w_i -ge $w_end ] && fail "gave up waiting for: $*"
        sleep 0.2
    done
}

# dev_stat DEV FIELD: a field of /sys/block/DEV/stat (1: reads completed, 3: 512-byte sectors read).
dev_stat() {
    [ -r "/sys/block/$1/stat" ] || fail "no /sys/block/$1/stat"
    awk -v f="$2" '{ print $f }' "/sys/block/$1/stat"
}
dev_reads() { dev_stat "$1" 1; }
dev_sectors() { dev_stat "$1" 3; }

drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# expect_read_fails DEV BS SKIP: an O_DIRECT read of one block fails (any error); prints dd's message.
expect_read_fails() {
    out="$(dd if="$1" of=/dev/null bs="$2" skip="$3" count=1 iflag=direct 2>&1)" \
        && fail "O_DIRECT read of $1 block $3 (bs $2) succeeded, expected an error"
    echo "$out" | tail -n1
}

# expect_direct_error DEV BS SKIP ERRTEXT: an O_DIRECT read of block SKIP (size BS) fails with ERRTEXT.
expect_direct_error() {
    out="$(dd if="$1" of=/dev/null bs="$2" skip="$3" count=1 iflag=direct 2>&1)" \
        && fail "O_DIRECT read of $1 block $3 (bs $2) succeeded, expected '$4'"
    case "$out" in
        *"$4"*) ;;
        *) fail "O_DIRECT read of $1 block $3 (bs $2) failed with '$out', expected '$4'" ;;
    esac
}

# scsi_debug_load PARAM=VALUE...: load scsi_debug and print the name of its block device (sdX or srX).
scsi_debug_load() {
    insmod /lib/modules/scsi_debug.ko "$@" || fail "insmod scsi_debug $*"
    i=0
    while [ $i -lt 100 ]; do
        for b in /sys/bus/pseudo/drivers/scsi_debug/adapter*/host*/target*/*/block/*; do
            if [ -e "$b" ] && [ -b "/dev/${b##*/}" ]; then
                echo "${b##*/}"
                return 0
            fi
        done
        sleep 0.1
        i=$((i + 1))
    done
    fail "scsi_debug ($*) made no block device"
}

scsi_debug_unload() {
    i=0
    while grep -q '^scsi_debug ' /proc/modules; do
        rmmod scsi_debug 2>/dev/null && return 0
        i=$((i + 1))
        [ $i -gt 50 ] && fail "rmmod scsi_debug: still busy"
        sleep 0.1
    done
}

# map_runs MAPFILE: the data lines of a ddrescue mapfile as "pos size status" with decimal numbers.
map_runs() {
    [ -r "$1" ] || fail "no mapfile $1"
    seen_status=0
    while read -r a b c rest; do
        case "$a" in '#'* | '') continue ;; esac
        if [ $seen_status -eq 0 ]; then # the first non-comment line is the status line
            seen_status=1
            continue
        fi
        echo "$((a)) $((b)) $c"
    done < "$1"
}

# map_bytes MAPFILE STATUSCHAR / map_areas MAPFILE STATUSCHAR
map_bytes() { map_runs "$1" | awk -v s="$2" '$3 == s { n += $2 } END { printf "%d\n", n }'; }
map_areas() { map_runs "$1" | awk -v s="$2" '$3 == s { n++ } END { printf "%d\n", n }'; }

# map_bytes_in MAPFILE STATUSCHAR POS LEN: bytes of that status within [POS, POS+LEN).
map_bytes_in() {
    map_runs "$1" | awk -v s="$2" -v p="$3" -v l="$4" '
        $3 == s { a = $1 > p ? $1 : p; e1 = $1 + $2; e2 = p + l; b = e1 < e2 ? e1 : e2; if (b > a) n += b - a }
        END { printf "%d\n", n }'
}

# status_json MAPFILE KEY: "bytes areas" of KEY (rescued, non_tried, bad_sector, ...) from blkcache status --json.
status_json() {
    blkcache status "$1" --json > /tmp/status.json || fail "blkcache status $1 --json failed"
    tr -d ' \n' < /tmp/status.json \
        | sed -n "s/.*\"$2\":{\"bytes\":\([0-9]*\),\"areas\":\([0-9]*\)}.*/\1 \2/p"
}

# expect_cached_match MAPFILE IMAGE REFERENCE: every '+' run of the mapfile holds the reference's bytes in the image
# (the map never claims bytes that are not in the image).
expect_cached_match() {
    map_runs "$1" | while read -r pos len st; do
        [ "$st" = + ] || continue
        dd if="$2" of=/tmp/ecm.img bs=65536 skip="$pos" count="$len" iflag=skip_bytes,count_bytes status=none
        dd if="$3" of=/tmp/ecm.ref bs=65536 skip="$pos" count="$len" iflag=skip_bytes,count_bytes status=none
        cmp /tmp/ecm.img /tmp/ecm.ref > /dev/null || { echo "run at $pos (+$len)"; break; }
    done > /tmp/ecm.bad
    [ -s /tmp/ecm.bad ] && fail "image $2 differs from $3 in a cached $(cat /tmp/ecm.bad)"
    return 0
}

# map_status_at MAPFILE OFFSET: the status char covering OFFSET (empty past the end).
map_status_at() {
    map_runs "$1" | awk -v o="$2" '$1 <= o && o < $1 + $2 { print $3; exit }'
}

# map_expect MAPFILE "pos size status" lines (decimal): the mapfile's runs are exactly these.
map_expect() {
    got="$(map_runs "$1")"
    [ "$got" = "$2" ] || fail "mapfile $1 runs differ: got [$(echo "$got" | tr '\n' ';')] want [$(echo "$2" | tr '\n' ';')]"
}

# blk_add ARGS...: blkcache add; prints the device path; fails unless it is a block device.
blk_add() {
    dev="$(blkcache add "$@" 2>/tmp/add.err)" || fail "blkcache add $*: $(tail -n3 /tmp/add.err | tr '\n' ' ')"
    dev="$(echo "$dev" | tail -n1)"
    [ -b "$dev" ] || fail "blkcache add $* printed '$dev', not a block device"
    echo "$dev"
}

# cache_map DIR: the mapfile in a cache directory.
cache_map() {
    for f in "$1"/*.map "$1"/mapfile "$1"/*/*.map "$1"/*/mapfile; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    fail "no mapfile in $1: $(find "$1" | tr '\n' ' ')"
}

# cache_image DIR: the image file in a cache directory.
cache_image() {
    for f in "$1"/*.img "$1"/image "$1"/*/*.img "$1"/*/image; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    fail "no image in $1: $(find "$1" | tr '\n' ' ')"
}

# show_daemon_log DIR: the cache's daemon log, indented (for failure analysis on the console).
show_daemon_log() {
    [ -f "$1/daemon.log" ] && sed 's/^/    daemon.log: /' "$1/daemon.log" | tail -n 40
    return 0
}

# range_of FILE POS LEN OUT [direct]: copy LEN bytes at byte offset POS of FILE to OUT; with "direct", one O_DIRECT
# read per block (POS and LEN multiples of 512, and of the device's logical block size). Fails if the read fails.
range_of() {
    if [ "${5:-}" = direct ]; then
        # The largest block size (64 KiB, 2 KiB, 512) that divides both: O_DIRECT needs whole aligned blocks.
        for r_bs in 65536 2048 512; do
            [ $(($2 % r_bs)) -eq 0 ] && [ $(($3 % r_bs)) -eq 0 ] && break
        done
        dd if="$1" of="$4" bs=$r_bs skip=$(($2 / r_bs)) count=$(($3 / r_bs)) iflag=direct status=none \
            || fail "O_DIRECT read of $1 at $2 (+$3) failed"
    else
        dd if="$1" of="$4" bs=65536 skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none \
            || fail "read of $1 at $2 (+$3) failed"
    fi
}

# expect_same_range DEV SRC POS LEN: an O_DIRECT read of DEV at POS (+LEN) succeeds and equals SRC's bytes there.
expect_same_range() {
    range_of "$1" "$3" "$4" /tmp/esr.got direct
    range_of "$2" "$3" "$4" /tmp/esr.ref
    cmp /tmp/esr.got /tmp/esr.ref > /dev/null || fail "$1 at $3 (+$4) differs from $2"
}

# map_runs_of MAPFILE STATUSCHAR: the runs of one status, "pos size" per line (decimal).
map_runs_of() {
    map_runs "$1" | awk -v s="$2" '$3 == s { print $1, $2 }'
}

# tree_sums DIR: sha256 of every file under DIR, sorted by path (compare before/after to prove nothing changed).
tree_sums() {
    [ -d "$1" ] || fail "no directory $1"
    (cd "$1" && find . -type f | sort | xargs sha256sum)
}

# daemon_counter LOG NAME: NAME (hits, misses, errors, media_reads, media_bytes, media_errors) from the last
# "served counters=Counters { ... }" line a daemon wrote to LOG when it stopped (the log holds ANSI colour codes
# around field names: only the Debug text inside the braces is parsed).
daemon_counter() {
    [ -r "$1" ] || fail "no daemon log $1"
    dc_line="$(tr -d '\033' < "$1" | grep 'served.*Counters {' | tail -n1)"
    [ -n "$dc_line" ] || fail "no 'served counters=Counters {...}' line in $1"
    dc_v="$(echo "$dc_line" | sed -n "s/.*[ {]$2: \([0-9]*\).*/\1/p")"
    [ -n "$dc_v" ] || fail "no counter $2 in: $dc_line"
    echo "$dc_v"
}

# dev_inflight_reads DEV: read requests in flight in the block layer for DEV (field 1 of /sys/block/DEV/inflight).
dev_inflight_reads() {
    [ -r "/sys/block/$1/inflight" ] || fail "no /sys/block/$1/inflight"
    awk '{ print $1 }' "/sys/block/$1/inflight"
}

# reads_in_flight DEV: succeeds while a read is in flight on DEV (for wait_for, which runs it again each time).
reads_in_flight() {
    [ "$(dev_inflight_reads "$1")" -ge 1 ]
}

# expect_fails_with WHAT TEXT CMD...: CMD fails (non-zero) and its stderr+stdout contain TEXT; prints the output.
expect_fails_with() {
    efw_what="$1"
    efw_text="$2"
    shift 2
    efw_out="$("$@" 2>&1)" && fail "$efw_what: succeeded, expected a failure saying '$efw_text' (output: $efw_out)"
    case "$efw_out" in
        *"$efw_text"*) ;;
        *) fail "$efw_what: failed saying '$efw_out', expected '$efw_text'" ;;
    esac
    echo "$efw_out"
}

# cleanup: undo whatever a scenario left (mounts, blkcache devices and daemons, scsi_debug).
cleanup() {
    for m in $(awk '$2 ~ "^/mnt/" { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m"
    done
    if command -v blkcache > /dev/null; then
        for d in /dev/ublkb*; do
            [ -b "$d" ] && timeout 20 blkcache del "$d"
        done
    fi
    for p in $(pidof blkcache); do kill -9 "$p"; done
    grep -q '^scsi_debug ' /proc/modules && rmmod scsi_debug
    grep -q '^loop ' /proc/modules && for l in /dev/loop*; do losetup -d "$l" 2>/dev/null; done
    return 0
}

if [ "${0##*/}" = lib.sh ] && [ "${1:-}" = cleanup ]; then
    cleanup
fi

# expect_files_match DEV MNT: mounts DEV (iso9660, read-only) on MNT, checks every file against the checksums the
# host took when it made the disc, and unmounts.
expect_files_match() {
    mkdir -p "$2"
    must mount -t iso9660 -o ro "$1" "$2"
    (cd "$2" && sha256sum -c -s "$DATA/manifest.sha256") || fail "file checksums on $1 differ"
    must umount "$2"
}

# damaged_copy NAME: /tmp/NAME-src.iso, a copy of the ISO, and /tmp/NAME-damage.map, a test-mode map (GNU ddrescue's
# -H) with 4 bad sectors (2048 bytes) in the ISO's padding, 20 sectors before its end. Sets src, damage, size, ss,
# nsec and bad (the first bad sector).
damaged_copy() {
    src=/tmp/$1-src.iso
    damage=/tmp/$1-damage.map
    must cp "$ISO" "$src"
    size=$(stat -c %s "$src")
    ss=2048
    nsec=$((size / ss))
    bad=$((nsec - 20))
    {
        echo "0x00000000     +               1"
        printf '0x%08X  0x%08X  +\n' 0 $((bad * ss))
        printf '0x%08X  0x%08X  -\n' $((bad * ss)) $((4 * ss))
        printf '0x%08X  0x%08X  +\n' $(((bad + 4) * ss)) $(((nsec - bad - 4) * ss))
    } > "$damage"
}
