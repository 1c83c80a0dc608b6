#!/usr/bin/env bash
# Boot a QEMU (TCG) guest with a Debian kernel (6.12 unless --kernel 6.1), the static blkcache and the test data, run scenarios in it,
# and exit 0 only if every requested scenario printed PASS. See tests/guest/README.md.
# Usage: run.sh [options] [SCENARIO|FILE.sh|all]...
#   SCENARIO      a name from tests/guest/scenarios/ (without .sh); "all" = every scenario there
#   FILE.sh       any busybox sh script, run as a scenario named after the file
# Options:
#   --no-build        do not build blkcache; use the last static build (or --bin)
#   --bin PATH        use this static blkcache binary (implies --no-build); "none": boot without blkcache
#   --exec 'CMDS'     run these commands (busybox sh, set -ex, lib.sh loaded) as a scenario named "exec"
#   --shell           interactive busybox shell on the console after the scenarios (needs a terminal)
#   --timeout SECS    host-side limit for the whole guest run (default 60 + (scenario limit + 40) per scenario)
#   --scenario-timeout SECS   guest-side limit per scenario (default 120)
#   --kernel VER      the guest kernel: 6.12 (default; ublk) or 6.1 (Debian 12's own; no ublk, has nbd)
#   --no-cd           boot without the emulated CD drive
#   --extra-bin PATH  put another static binary into the guest's /bin (repeatable)
#   --append 'ARGS'   more guest kernel command line (e.g. mitigations=off, for a benchmark's A/B)
#   -v, --verbose     stream the whole console, not only the result lines
#   --keep            keep the work directory (printed at the end)
# Must never run QEMU without a host-side timeout, and never report success for a scenario that did not PASS.
set -euo pipefail
. "$(dirname "$0")/common.sh"

kernel=6.12 build=1 bin="" shell=0 host_timeout="" scen_timeout=120 cd=1 verbose=0 keep=0 exec_cmds="" extra_bins=()
more_append=""
requested=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --bin) bin="$2"; build=0; shift ;;
        --exec) exec_cmds="$2"; shift ;;
        --shell) shell=1 ;;
        --timeout) host_timeout="$2"; shift ;;
        --scenario-timeout) scen_timeout="$2"; shift ;;
        --kernel) kernel="$2"; shift ;;
        --no-cd) cd=0 ;;
        --extra-bin) extra_bins+=("$2"); shift ;;
        --append) more_append="$2"; shift ;;
        -v | --verbose) verbose=1 ;;
        --keep) keep=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) requested+=("$1") ;;
    esac
    shift
done

ensure_packages "${HARNESS_PACKAGES[@]}"
mkdir -p "$CACHE_DIR"
work="$(mktemp -d "$CACHE_DIR/run.XXXXXX")"
cleanup_work() {
    # QEMU must not outlive this script (a killed test run, ^C): stop it by its own pid.
    if [ -n "${monitor_reader:-}" ]; then kill "$monitor_reader" 2>/dev/null || true; fi
    if [ -s "$work/qemu.pid" ] && kill -0 "$(cat "$work/qemu.pid")" 2>/dev/null; then
        kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
    fi
    if [ $keep -eq 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup_work EXIT
trap 'exit 130' INT TERM

# Scenario list: names and files.
names=() files=()
for r in "${requested[@]}"; do
    if [ "$r" = all ]; then
        for f in "$GUEST_DIR"/scenarios/*.sh; do
            n="$(basename "$f" .sh)"
            [ "$n" = lib ] || names+=("$n")
        done
    elif [ -f "$r" ]; then
        names+=("$(basename "$r" .sh)")
        files+=("$r")
    elif [ -f "$GUEST_DIR/scenarios/$r.sh" ]; then
        names+=("$r")
    else
        die "no scenario '$r' (not a file, not tests/guest/scenarios/$r.sh)"
    fi
done
if [ -n "$exec_cmds" ]; then
    printf "# ad-hoc commands from run.sh --exec\n. /scenarios/lib.sh\nset -ex\n%s\n" "$exec_cmds" > "$work/exec.sh"
    names+=(exec)
    files+=("$work/exec.sh")
fi
[ ${#names[@]} -gt 0 ] || [ $shell -eq 1 ] || die "no scenario given (try: run.sh smoke, run.sh all, run.sh --exec 'CMDS')"

# The static blkcache.
if [ $build -eq 1 ]; then
    log "building static blkcache (release, crt-static)"
    (cd "$REPO_ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet \
        --target x86_64-unknown-linux-gnu --bin blkcache) >&2 || die "cargo build of the static blkcache failed"
fi
if [ -z "$bin" ]; then
    bin="$REPO_ROOT/target/x86_64-unknown-linux-gnu/release/blkcache"
fi
binargs=()
if [ "$bin" != none ]; then
    [ -x "$bin" ] || die "no static blkcache at $bin (run without --no-build)"
    binargs=(-b "$bin")
fi

kdir="$("$GUEST_DIR/fetch-kernel.sh" --kernel "$kernel")" || die "could not fetch the guest kernel $kernel"
"$GUEST_DIR/make-data.sh" "$work/data" >&2 || die "could not make the test data"
xargs=()
for x in "${extra_bins[@]}"; do xargs+=(-x "$x"); done
"$GUEST_DIR/build-initramfs.sh" -o "$work/initramfs.cpio" -k "$kdir" "${binargs[@]}" -d "$work/data" \
    "${xargs[@]}" "${files[@]}" || die "could not build the initramfs"

scen_csv="$(IFS=,; echo "${names[*]}")"
append="console=ttyS0 panic=-1 quiet loglevel=3 blkcache.scenarios=$scen_csv blkcache.timeout=$scen_timeout"
qemu_args=(-accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot -nodefaults -no-user-config
    -serial stdio -monitor "pipe:$work/monitor" -pidfile "$work/qemu.pid"
    -kernel "$kdir/vmlinuz" -initrd "$work/initramfs.cpio")
if [ $cd -eq 1 ]; then
    append="$append blkcache.cd=1"
    qemu_args+=(-device virtio-scsi-pci,id=scsi0
        -drive "if=none,id=cd0,file=$work/data/test.iso,format=raw,media=cdrom,readonly=on"
        -device scsi-cd,drive=cd0,bus=scsi0.0)
fi
[ $shell -eq 1 ] && append="$append blkcache.shell=1"
[ -n "$more_append" ] && append="$append $more_append"
qemu_args+=(-append "$append")
# Each scenario's guest-side limit: the default, or its own "# guest-timeout: SECS" line when that is longer (init
# applies the same rule).
scenario_limit() {
    local f="$GUEST_DIR/scenarios/$1.sh" own x
    for x in "${files[@]}"; do [ "$(basename "$x" .sh)" = "$1" ] && f="$x"; done
    own="$(sed -n 's/^# guest-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" 2>/dev/null | head -n1)"
    if [ -n "$own" ] && [ "$own" -gt "$scen_timeout" ]; then echo "$own"; else echo "$scen_timeout"; fi
}
if [ -z "$host_timeout" ]; then
    host_timeout=60
    for n in "${names[@]}"; do host_timeout=$((host_timeout + $(scenario_limit "$n") + 40)); done
fi
[ $shell -eq 1 ] && host_timeout=$((host_timeout + 3600))

# The QEMU monitor on FIFOs: the guest asks for a monitor command (eject, change) by printing
# "HOSTCMD <command>" on its console; @DATA@ in it stands for the host's test data directory.
mkfifo "$work/monitor.in" "$work/monitor.out"
cat "$work/monitor.out" > "$work/monitor.log" 2>/dev/null &
monitor_reader=$!
log "booting $(cat "$kdir/version") under TCG: scenarios ${scen_csv:-none} (limit ${host_timeout}s)"
console="$work/console.log"
start=$(date +%s)
set +e
if [ $shell -eq 1 ]; then
    timeout --foreground -k 10 "$host_timeout" qemu-system-x86_64 "${qemu_args[@]}" 2>&1 | tee "$console"
    qemu_rc=${PIPESTATUS[0]}
else
    # In the background, so that a TERM/INT to this script is handled at once (bash runs traps only between
    # foreground commands) and the EXIT trap stops QEMU.
    (
        timeout --foreground -k 10 "$host_timeout" qemu-system-x86_64 "${qemu_args[@]}" < /dev/null 2>&1 \
            | sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' | tee "$console" \
            | while IFS= read -r line; do
                case "$line" in
                    *"HOSTCMD "*)
                        cmd="${line#*HOSTCMD }"
                        printf '%s\n' "${cmd//@DATA@/$work/data}" > "$work/monitor.in"
                        ;;
                esac
                if [ $verbose -eq 1 ]; then
                    printf '%s\n' "$line"
                else
                    case "$line" in *"BOOT ready"* | *"SCENARIO "* | *"SUMMARY "* | *"RESULT "* | *BENCH* | *DEMO*) printf '%s\n' "$line" ;; esac
                fi
            done
        rc=${PIPESTATUS[0]}
        { echo "$rc" > "$work/qemu.rc"; } 2>/dev/null
    ) &
    wait $!
    qemu_rc="$(cat "$work/qemu.rc" 2>/dev/null || echo 255)"
fi
set -e
took=$(($(date +%s) - start))
kill "$monitor_reader" 2>/dev/null || true
# Plain text: no carriage returns, no terminal escapes from the firmware.
sed -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' "$console" > "$work/console.txt"
cp "$work/console.txt" "$CACHE_DIR/last-console.log"

# Verdict: every requested scenario must have printed PASS.
problems=()
[ $qemu_rc -eq 124 ] || [ $qemu_rc -eq 137 ] && problems+=("QEMU was stopped by the host timeout after ${host_timeout}s")
[ $qemu_rc -ne 0 ] && [ $qemu_rc -ne 124 ] && [ $qemu_rc -ne 137 ] && problems+=("QEMU exited with status $qemu_rc")
grep -q 'BOOT ready' "$work/console.txt" || problems+=("the guest never reached its init (no 'BOOT ready' line)")
for n in "${names[@]}"; do
    line="$(grep -E "^SCENARIO $n (PASS|FAIL)" "$work/console.txt" | tail -n1 || true)"
    case "$line" in
        "SCENARIO $n PASS"*) ;;
        "") problems+=("scenario $n printed no result") ;;
        *) problems+=("${line#SCENARIO }") ;;
    esac
done
if [ ${#problems[@]} -eq 0 ]; then
    log "all ${#names[@]} scenario(s) passed in ${took}s (console: $CACHE_DIR/last-console.log)"
    exit 0
fi
if [ $verbose -eq 0 ] && [ $shell -eq 0 ]; then
    echo "===== guest console =====" >&2
    cat "$work/console.txt" >&2
    echo "===== end of guest console =====" >&2
fi
for p in "${problems[@]}"; do log "FAILED: $p"; done
log "run took ${took}s; console saved in $CACHE_DIR/last-console.log"
exit 1
