#!/usr/bin/env bash
# Build the guest's initramfs (newc cpio, uncompressed: most of it is incompressible test data, and an emulated
# CPU decompresses slowly). Contents: busybox-static with applet links, the kernel modules and their load order,
# the guest init, the scenario scripts, the test data, and (if given) the static blkcache and helper binaries.
# Usage: build-initramfs.sh -o OUT.cpio -k KERNEL_DIR [-b BLKCACHE] [-d DATA_DIR] [-x EXTRA_BIN]... [SCENARIO.sh...]
#   scenario files are copied to /scenarios/ under their own names; tests/guest/scenarios/*.sh are always included.
# Must never include anything from the host's root file system other than busybox.
set -euo pipefail
. "$(dirname "$0")/common.sh"

out="" kdir="" bin="" data="" extras=()
while getopts "o:k:b:d:x:" opt; do
    case "$opt" in
        o) out="$OPTARG" ;;
        k) kdir="$OPTARG" ;;
        b) bin="$OPTARG" ;;
        d) data="$OPTARG" ;;
        x) extras+=("$OPTARG") ;;
        *) die "usage: build-initramfs.sh -o OUT -k KERNEL_DIR [-b BLKCACHE] [-d DATA_DIR] [-x BIN]... [SCENARIO.sh...]" ;;
    esac
done
shift $((OPTIND - 1))
[ -n "$out" ] && [ -n "$kdir" ] || die "build-initramfs.sh needs -o OUT and -k KERNEL_DIR"
[ -f "$kdir/.complete" ] || die "kernel dir $kdir is incomplete (run fetch-kernel.sh)"
ensure_packages busybox-static cpio file

busybox=/bin/busybox
file -L "$busybox" 2>/dev/null | grep -q 'dynamically' && die "$busybox is not static (install busybox-static)"

root="$(mktemp -d "${out}.root.XXXXXX")"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,lib/modules,scenarios,data,proc,sys,dev,tmp,mnt,root,run,etc}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
cp "$kdir"/modules/*.ko "$root/lib/modules/"
cp "$kdir/load-order" "$root/lib/modules/load-order"
cp "$GUEST_DIR/init" "$root/init"
chmod 755 "$root/init"
cp "$GUEST_DIR"/scenarios/*.sh "$root/scenarios/"
for s in "$@"; do
    [ -f "$s" ] || die "no scenario file $s"
    cp "$s" "$root/scenarios/$(basename "$s")"
done
if [ -n "$bin" ]; then
    [ -x "$bin" ] || die "no executable $bin"
    file -L "$bin" 2>/dev/null | grep -q 'dynamically' && die "$bin is dynamically linked; the guest has no libc"
    strip -o "$root/bin/blkcache" "$bin" 2>/dev/null || cp "$bin" "$root/bin/blkcache"
fi
for x in "${extras[@]}"; do
    strip -o "$root/bin/$(basename "$x")" "$x" 2>/dev/null || cp "$x" "$root/bin/$(basename "$x")"
done
if [ -n "$data" ]; then
    cp -r "$data"/. "$root/data/"
fi
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) > "$out"
log "initramfs $out: $(du -h "$out" | cut -f1)"
