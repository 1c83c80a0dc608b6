# Helpers for the systemd guest scenarios (bash, sourced by the runner before the scenario).
# Holds assertions, the host channel (QEMU monitor commands), unit and device queries.
# Must never hide a failure: every helper that cannot do its job calls fail.

DATA=/data          # from the host: test.iso (disc A), other.iso (disc B), manifest.sha256
ISO_A="$DATA/test.iso"
ISO_B="$DATA/other.iso"
CACHES=/var/lib/blkcache
UNIT=blkcache@sr0.service
LINK=/dev/blkcache/sr0

# fail WHY: the scenario's result line says WHY; the journal is printed after it.
fail() {
    echo "FAIL: $*" >&2
    echo "$*" > /run/blkcache-test/why
    exit 1
}

# note TEXT: a progress line on the console (and the step a time-out names).
note() {
    echo "  [$SCENARIO] $*"
    echo "$*" > /run/blkcache-test/where
}

must() { "$@" || fail "command failed ($?): $*"; }
expect_eq() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; }

# host_cmd MONITOR-COMMAND: the host runs it on QEMU's monitor (e.g. "eject -f cd0",
# "change cd0 @DATA@/other.iso raw read-only"; @DATA@ is the host's copy of /data). Asynchronous: poll with wait_for.
host_cmd() { printf 'HOSTCMD %s\n' "$*" > /dev/ttyS1; }

# wait_for SECS CMD...: run CMD every 0.2 s until it succeeds; fail after SECS.
wait_for() {
    local end=$(($1 * 5)) i=0
    shift
    until "$@" > /dev/null 2>&1; do
        i=$((i + 1))
        [ $i -ge $end ] && fail "gave up after $((end / 5)) s waiting for: $*"
        sleep 0.2
    done
}

# insert ISO [DRIVE]: the host swaps the disc in DRIVE (cd0, the guest's sr0, by default; cd1 is sr1) for
# /data/ISO (forced eject first: udev locks the tray).
insert() {
    host_cmd "eject -f ${2:-cd0}"
    host_cmd "change ${2:-cd0} @DATA@/$(basename "$1") raw read-only"
}

unit_state() { systemctl show -P ActiveState "$1"; }
unit_is() { [ "$(unit_state "$1")" = "$2" ]; }
unit_prop() { systemctl show -P "$2" "$1"; }

# The kind of device blkcache serves on this kernel: /dev/ublkbN, or /dev/nbdN without ublk (the 6.1 kernel).
if modinfo ublk_drv > /dev/null 2>&1; then DEV_PREFIX=/dev/ublkb; else DEV_PREFIX=/dev/nbd; fi
# nbd_unwatched: udev stops watching nbd devices for writers closing them (systemd's 60-block.rules watches
# them since 247; older udev did not), so that only the kernel's change uevents and blkcache's own name and unname
# them: the nbd scenarios test the harder case. A killed or stopped daemon closing its descriptor of the device
# then tells udev nothing; its device must still lose the drive's name.
nbd_unwatched() {
    echo 'SUBSYSTEM=="block", KERNEL=="nbd*", OPTIONS+="nowatch"' > /etc/udev/rules.d/99-blkcache-test-nbd-nowatch.rules
    udevadm control --reload
}
# served_dev [LINK]: the blkcache device /dev/blkcache/sr0 (or LINK) points at (empty if none).
served_dev() { readlink -f "${1:-$LINK}" 2>/dev/null | grep "^$DEV_PREFIX[0-9]*\$" || true; }
# link_serves ISO [LINK]: /dev/blkcache/sr0 (or LINK) is a blkcache device whose first 64 KiB are ISO's.
link_serves() {
    local d
    d="$(served_dev "${2:-$LINK}")"
    [ -b "$d" ] && cmp -s -n 65536 "$d" "$1"
}
# The device `blkcache list --json` pairs with SOURCE.
listed_dev() { blkcache list --json | jq -r --arg s "$1" '.[] | select(.source == $s) | .device'; }

# Drive read requests completed by sr0 (field 1 of its stat).
sr0_reads() { awk '{print $1}' /sys/block/sr0/stat; }

# cache_of ISO: the cache directory (under /var/lib/blkcache) of the disc ISO, found by its size and the optical
# drives' 2048-byte sectors (a card holding the same image has 512-byte sectors and a cache of its own).
cache_of() {
    local size m
    size=$(stat -c %s "$1")
    for m in "$CACHES"/*/blkcache.json; do
        [ -f "$m" ] && [ "$(jq -r '"\(.size) \(.sector_size)"' "$m")" = "$size 2048" ] && { dirname "$m"; return 0; }
    done
    return 1
}

# media_seen: udev says a disc is in sr0.
media_seen() { udevadm info -q property /dev/sr0 | grep -q '^ID_CDROM_MEDIA=1'; }

# serve ISO: make sure /dev/blkcache/sr0 serves disc ISO (insert it unless it already does); prints the device.
serve() {
    link_serves "$1" || insert "$1"
    wait_for 40 link_serves "$1"
    udevadm settle
    served_dev
}

# expect_cache_holds DIR ISO [live]: the cache in DIR holds ISO's bytes exactly where its saved map says `+`, and
# (unless "live": a served cache's saved map lags its image) zeros everywhere else: no byte of another disc, nothing
# unrecorded. Prints the bytes marked `+`.
expect_cache_holds() {
    local dir="$1" iso="$2" live="${3:-}" pos size st done_bytes=0
    [ -f "$dir/mapfile" ] && [ -f "$dir/image" ] || fail "no cache in $dir"
    while read -r pos size st; do
        pos=$((pos)) size=$((size))
        if [ "$st" = + ]; then
            cmp -s -i "$pos:$pos" -n "$size" "$dir/image" "$iso" || fail "$dir/image differs from $iso in + run $pos+$size"
            done_bytes=$((done_bytes + size))
        elif [ "$live" != live ]; then
            cmp -s -i "$pos:0" -n "$size" "$dir/image" /dev/zero || fail "$dir/image has data in its $st run $pos+$size"
        fi
    done < <(grep -v '^#' "$dir/mapfile" | tail -n +2)
    echo "$done_bytes"
}

# map_status_at DIR OFFSET: the mapfile status of the byte at OFFSET.
map_status_at() {
    grep -v '^#' "$1/mapfile" | tail -n +2 | while read -r pos size st; do
        if [ $(($2)) -ge $((pos)) ] && [ $(($2)) -lt $((pos + size)) ]; then echo "$st"; break; fi
    done
}

# map_saved DIR OFFSET: the saved map of the cache in DIR says `+` at OFFSET (for wait_for: saves are 30 s apart).
map_saved() { [ "$(map_status_at "$1" "$2")" = + ]; }

# read_direct DEV OFFSET LEN: O_DIRECT read of LEN bytes at OFFSET (multiples of 64 KiB) to /dev/null.
read_direct() {
    dd if="$1" of=/dev/null bs=65536 skip=$(($2 / 65536)) count=$(($3 / 65536)) iflag=direct status=none
}

# unit_restarts: how many times systemd restarted blkcache@sr0.service since it was last started from outside.
unit_restarts() { unit_prop "$UNIT" NRestarts; }
# unit_starts: how many times blkcache@sr0.service started in this boot (the journal survives the unit's unloading).
unit_starts() { journalctl -u "$UNIT" -o cat --no-pager | grep -c "^Started $UNIT"; }

# journal_has PRIORITY TEXT: the unit's journal has a line containing TEXT at exactly that syslog priority.
journal_has() {
    journalctl -u "$UNIT" -o cat -p "$1..$1" --no-pager | grep -qF "$2"
}

# udisks_hint DEV KEY: the value udisks shows for KEY (e.g. HintIgnore) in `udisksctl info -b DEV`.
udisks_hint() { udisksctl info -b "$1" 2>/dev/null | sed -n "s/^ *$2: *//p" | head -n1; }
# udisks_says DEV KEY VALUE: udisks shows VALUE for KEY of DEV (udisksd notices udev's changes asynchronously).
udisks_says() { [ "$(udisks_hint "$1" "$2")" = "$3" ]; }

# scsi_disk TARGET: the kernel name (sdX) of the disk at SCSI target TARGET of the guest's controller. sd probes
# disks in parallel, so whether the card reader or the hard disk is sda changes from boot to boot.
scsi_disk() {
    local d _
    for _ in $(seq 30); do
        for d in /sys/bus/scsi/devices/*:0:"$1":0/block/*; do
            [ -e "$d" ] && { basename "$d"; return 0; }
        done
        sleep 1
    done
    return 1
}
# The card reader: QEMU's card0, a removable SCSI disk (target 2); the hard disk: disk0 (target 3). Only the card
# scenarios look for them (use_card_reader).
use_card_reader() {
    CARD_NAME="$(scsi_disk 2)" || fail "no card reader (SCSI target 2) appeared"
    DISK_NAME="$(scsi_disk 3)" || fail "no hard disk (SCSI target 3) appeared"
    CARD=/dev/$CARD_NAME
    DISK=/dev/$DISK_NAME
    CARD_UNIT=blkcache@$CARD_NAME.service
    CARD_LINK=/dev/blkcache/$CARD_NAME
    note "card reader $CARD, hard disk $DISK"
}
CARD_IMG="$DATA/card.img"
# insert_card IMAGE: the host swaps the card in the reader for /data/IMAGE.
insert_card() { insert "$1" card0; }
# pull_card: the host pulls the card out (QEMU `eject -f`: the guest only notices at its next command).
pull_card() { host_cmd "eject -f card0"; }
# card_holds FILE: the reader's medium (its size) is FILE's size.
card_holds() { [ "$(($(cat "/sys/block/$CARD_NAME/size") * 512))" = "$(stat -c %s "$1")" ]; }
# enable_card_reader: what the README tells a user to add to serve a card reader through blkcache (by its
# serial, so only this reader), and udev reading it.
enable_card_reader() {
    local serial
    serial="$(udevadm info -q property -n "$CARD" | sed -n 's/^ID_SERIAL=//p')"
    [ -n "$serial" ] || fail "$CARD has no ID_SERIAL"
    printf 'SUBSYSTEM=="block", ENV{ID_SERIAL}=="%s", ENV{BLKCACHE_ENABLE}="1"\n' "$serial" \
        > /etc/udev/rules.d/61-blkcache-enable.rules
    udevadm control --reload
}
# the_map_has_only DIR STATUSES: every run of DIR's saved map has one of STATUSES (e.g. "+?").
the_map_has_only() {
    local bad
    bad="$(grep -v '^#' "$1/mapfile" | tail -n +2 | awk -v ok="$2" 'index(ok, $3) == 0')"
    [ -z "$bad" ] || fail "$1/mapfile has runs other than '$2': $(echo $bad)"
}
# cache_of_source SOURCE: the cache directory `blkcache list --json` shows for SOURCE (a served drive).
cache_of_source() { blkcache list --json | jq -r --arg s "$1" '.[] | select(.source == $s) | .cache'; }
