#!/usr/bin/env bash
# Boot Debian 12 with real systemd and udev (tests/guest/systemd/build-root.sh) on a guest kernel, install
# the blkcache .deb in it (dpkg -i), and run scenarios that drive the CD drive from the host through the QEMU
# monitor. Consecutive scenarios with the same boot set-up share one boot (a boot under TCG takes a minute or
# two); exits 0 only if every requested scenario printed PASS.
# Usage: run.sh [options] [SCENARIO|all]...
#   SCENARIO        a name from tests/guest/systemd/scenarios/ (without .sh); "all" = every scenario there
# Options:
#   --no-build      use the last built package (target/debian/blkcache_*.deb)
#   --deb PATH      use this package (implies --no-build)
#   --timeout SECS  guest-side limit per scenario (default 180); the host adds 240 s per boot for boot and power-off
#   -v, --verbose   stream the scenario channel and the whole console
#   --keep          keep the work directory (printed at the end)
# The guest has two CD drives: cd0 (sr0) and cd1 (sr1, empty at boot), and a card reader: card0 (sdX, a removable
# SCSI disk holding other.iso at boot; `change card0 @DATA@/card.img raw read-only` inserts a partitioned card),
# and a hard disk: disk0 (sdY, not removable; sd names the two in either order).
# A scenario's header may say, in comment lines: "# boot-disc: test.iso|other.iso|none" (the disc in cd0 at
# boot, default none), "# install: boot|scenario" (dpkg -i before udev's coldplug, or by the runner once the
# system is up; default scenario) and "# kernel: 6.12|6.1" (fetch-kernel.sh's: 6.12 with ublk, the default, or
# Debian 12's own 6.1 without ublk, where blkcache serves through the kernel's nbd driver).
# Must never run QEMU without a host-side timeout, and never report success for a scenario that did not PASS.
set -euo pipefail
SD_DIR="$(cd "$(dirname "$0")" && pwd)"
. "$SD_DIR/../common.sh"

build=1 deb="" scen_timeout=180 verbose=0 keep=0 requested=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --deb) deb="$2"; build=0; shift ;;
        --timeout) scen_timeout="$2"; shift ;;
        -v | --verbose) verbose=1 ;;
        --keep) keep=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) requested+=("$1") ;;
    esac
    shift
done
names=()
for r in "${requested[@]}"; do
    if [ "$r" = all ]; then
        for f in "$SD_DIR"/scenarios/*.sh; do names+=("$(basename "$f" .sh)"); done
    elif [ -f "$SD_DIR/scenarios/$r.sh" ]; then
        names+=("$r")
    else
        die "no scenario '$r' in tests/guest/systemd/scenarios/"
    fi
done
[ ${#names[@]} -gt 0 ] || die "no scenario given (try: run.sh all)"

ensure_packages "${HARNESS_PACKAGES[@]}" debootstrap
mkdir -p "$CACHE_DIR"
work="$(mktemp -d "$CACHE_DIR/sdrun.XXXXXX")"
qemu_pid_file="$work/qemu.pid"
cleanup() {
    if [ -s "$qemu_pid_file" ] && kill -0 "$(cat "$qemu_pid_file")" 2>/dev/null; then
        kill "$(cat "$qemu_pid_file")" 2>/dev/null || true
    fi
    if [ $keep -eq 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $build -eq 1 ]; then
    deb="$("$SD_DIR/build-deb.sh")" || die "could not build the package"
elif [ -z "$deb" ]; then
    deb="$(ls -t "$REPO_ROOT"/target/debian/blkcache_*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || die "no built package (run without --no-build)"
fi
[ -f "$deb" ] || die "no package $deb"
"$GUEST_DIR/make-data.sh" "$work/data" >&2 || die "could not make the test data"
# A memory card for the card-reader scenarios: an MBR partition table and one partition (from sector 2048)
# holding disc A's file system.
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
card="$work/data/card.img" iso_sectors=$(($(stat -c %s "$work/data/test.iso") / 512))
truncate -s $(((2048 + iso_sectors) * 512)) "$card"
dd if="$work/data/test.iso" of="$card" bs=512 seek=2048 conv=notrunc status=none
# shellcheck disable=SC2059 # the format is built from hex escapes on purpose
printf "\\x00\\x00\\x00\\x00\\x83\\x00\\x00\\x00$(le32 2048)$(le32 "$iso_sectors")" | dd of="$card" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$card" bs=1 seek=510 conv=notrunc status=none

# header SCENARIO KEY DEFAULT: the value of "# KEY: value" in the scenario's header.
header() {
    local v
    v="$(sed -n "s/^# $2: *//p" "$SD_DIR/scenarios/$1.sh" | head -n1)"
    echo "${v:-$3}"
}

# overlay FIRST OUT: the per-boot cpio appended to the base root: package, runner, scenarios, data, test unit
# (FIRST's header sets the boot up).
overlay() {
    local o="$work/overlay" first="$1" out="$2"
    rm -rf "$o"
    mkdir -p "$o/blkcache-test" "$o/data" "$o/etc/systemd/system/multi-user.target.wants" \
        "$o/etc/systemd/system/sysinit.target.wants"
    cp "$deb" "$o/blkcache-test/blkcache.deb"
    cp "$SD_DIR/guest/runner" "$SD_DIR/guest/lib.sh" "$o/blkcache-test/"
    # Every scenario, so that one may run another's steps (the nbd ones run the ublk ones' on 6.1).
    cp "$SD_DIR"/scenarios/*.sh "$o/blkcache-test/"
    cp "$work/data/test.iso" "$work/data/other.iso" "$work/data/card.img" "$work/data/manifest.sha256" "$o/data/"
    cp "$SD_DIR/guest/blkcache-test.service" "$SD_DIR/guest/blkcache-install.service" "$o/etc/systemd/system/"
    ln -s ../blkcache-test.service "$o/etc/systemd/system/multi-user.target.wants/blkcache-test.service"
    if [ "$(header "$first" install scenario)" = boot ]; then
        ln -s ../blkcache-install.service "$o/etc/systemd/system/sysinit.target.wants/blkcache-install.service"
    fi
    (cd "$o" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) > "$out"
}

# boot NAME...: one guest run of these scenarios (the first one's header sets the boot up); the result lines go
# to $work/NAME.result, a problem of the whole run to $work/NAME.problem of each.
boot() {
    local name="$1" disc drive limit initrd="$work/initrd.cpio" csv n kdir root
    csv="$(IFS=,; echo "$*")"
    kdir="$("$GUEST_DIR/fetch-kernel.sh" --kernel "$(header "$name" kernel 6.12)")" || die "could not fetch the guest kernel"
    # The root, then the kernel's modules (two paths).
    root="$("$SD_DIR/build-root.sh" "$kdir")" || die "could not build the systemd guest root"
    overlay "$name" "$work/overlay.cpio"
    # shellcheck disable=SC2086 # the two paths of build-root.sh
    cat $root "$work/overlay.cpio" > "$initrd"
    disc="$(header "$name" boot-disc none)"
    drive="if=none,id=cd0,media=cdrom,readonly=on"
    [ "$disc" = none ] || drive="$drive,format=raw,file=$work/data/$disc"
    # A second, empty drive (cd1, the guest's sr1) for the two-drive scenario; a card reader (card0, the guest's
    # sdX: a removable SCSI disk; QEMU needs a medium in it at power-on: other.iso) for the card scenarios, and a
    # hard disk (disk0, sdY: not removable) that must never be served.
    limit=$((scen_timeout * $# + 240))
    rm -f "$work/monitor.in" "$work/monitor.out" "$qemu_pid_file"
    mkfifo "$work/monitor.in" "$work/monitor.out"
    cat "$work/monitor.out" > "$work/$name.monitor.log" 2>/dev/null &
    local reader=$!
    local append="console=ttyS0 panic=-1 quiet loglevel=3 systemd.show_status=0 rd.udev.log_level=3"
    append="$append blkcache.scenarios=$csv blkcache.timeout=$scen_timeout blkcache.install=$(header "$name" install scenario)"
    log "booting $(cat "$kdir/version") for $csv (disc at boot: $disc; limit ${limit}s)"
    set +e
    timeout -k 10 "$limit" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 -display none -no-reboot \
        -nodefaults -no-user-config -pidfile "$qemu_pid_file" \
        -serial "file:$work/$name.console.log" -serial stdio -monitor "pipe:$work/monitor" \
        -kernel "$kdir/vmlinuz" -initrd "$initrd" -append "$append" \
        -device virtio-scsi-pci,id=scsi0 -drive "$drive" -device scsi-cd,drive=cd0,bus=scsi0.0,scsi-id=0 \
        -drive if=none,id=cd1,media=cdrom,readonly=on -device scsi-cd,drive=cd1,bus=scsi0.0,scsi-id=1 \
        -drive "if=none,id=card0,format=raw,readonly=on,file=$work/data/other.iso" \
        -device scsi-hd,drive=card0,bus=scsi0.0,scsi-id=2,removable=on \
        -drive "if=none,id=disk0,format=raw,readonly=on,file=$work/data/other.iso" \
        -device scsi-hd,drive=disk0,bus=scsi0.0,scsi-id=3 \
        < /dev/null 2>&1 | sed -u 's/\r//g' | tee "$work/$name.channel.log" | while IFS= read -r line; do
        case "$line" in
            HOSTCMD\ *)
                cmd="${line#HOSTCMD }"
                printf '%s\n' "${cmd//@DATA@/$work/data}" > "$work/monitor.in"
                ;;
        esac
        if [ $verbose -eq 1 ]; then printf '%s\n' "$line" >&2; else
            case "$line" in "SCENARIO "* | "BOOT "*) printf '%s\n' "$line" >&2 ;; esac
        fi
    done
    local rc=${PIPESTATUS[0]}
    set -e
    kill "$reader" 2>/dev/null || true
    wait "$reader" 2>/dev/null || true
    for n in "$@"; do
        grep -E "^SCENARIO $n (PASS|FAIL)" "$work/$name.channel.log" | tail -n1 > "$work/$n.result" || true
        grep -E "^SCENARIO boot FAIL" "$work/$name.channel.log" | sed 's/^SCENARIO //' >> "$work/$n.problem" || true
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            echo "QEMU was stopped by the host timeout after ${limit}s" >> "$work/$n.problem"
        elif [ $rc -ne 0 ]; then
            echo "QEMU exited with status $rc" >> "$work/$n.problem"
        fi
    done
    cp "$work/$name.console.log" "$CACHE_DIR/last-systemd-console.log" 2>/dev/null || true
}

problems=()
failed=0
start=$(date +%s)
# Groups of consecutive scenarios with the same boot set-up, one boot each.
group=() group_key=""
run_group() {
    [ ${#group[@]} -gt 0 ] || return 0
    boot "${group[@]}"
    local n line bad shown=0
    for n in "${group[@]}"; do
        line="$(cat "$work/$n.result")"
        bad=0
        case "$line" in
            "SCENARIO $n PASS"*) ;;
            "") problems+=("scenario $n printed no result"); bad=1 ;;
            *) problems+=("${line#SCENARIO }"); bad=1 ;;
        esac
        if [ -s "$work/$n.problem" ]; then
            problems+=("$n: $(sort -u "$work/$n.problem" | tr '\n' ' ')")
            bad=1
        fi
        failed=$((failed + bad))
        if { [ $bad -eq 1 ] || [ $verbose -eq 1 ]; } && [ $shown -eq 0 ]; then
            shown=1
            echo "===== guest console (${group[0]}) =====" >&2
            sed -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$work/${group[0]}.console.log" >&2
            echo "===== end of guest console (${group[0]}) =====" >&2
        fi
    done
    group=()
}
for n in "${names[@]}"; do
    key="$(header "$n" boot-disc none)/$(header "$n" install scenario)/$(header "$n" kernel 6.12)"
    [ "$key" = "$group_key" ] || run_group
    group_key="$key"
    group+=("$n")
done
run_group
took=$(($(date +%s) - start))
if [ ${#problems[@]} -eq 0 ]; then
    log "all ${#names[@]} systemd scenario(s) passed in ${took}s"
    echo "SUMMARY pass=${#names[@]} fail=0 total=${#names[@]}"
    exit 0
fi
for p in "${problems[@]}"; do log "FAILED: $p"; done
echo "SUMMARY pass=$((${#names[@]} - failed)) fail=$failed total=${#names[@]}"
exit 1
