#!/usr/bin/env bash
# Build (once, then cached) the base root of the systemd guest: Debian 12 minbase with systemd, udev, kmod and
# udisks2 from debootstrap, /init -> systemd, and the boot configured for tests (no gettys, a quiet console); and, per kernel, a
# second cpio with that kernel's modules (from fetch-kernel.sh) under /lib/modules with depmod run. Both newc cpio;
# run.sh appends a small third one (package, scenario, data) per run. Prints the two paths, one per line.
# Usage: build-root.sh KERNEL_DIR
# Cache keys: the root's is the package list and this script, the modules' adds the kernel, so a change to any of
# them builds a new one (and a second kernel costs no second debootstrap).
# Must never touch the host's root: everything happens under $BLKCACHE_GUEST_CACHE.
set -euo pipefail
. "$(dirname "$0")/../common.sh"

# Packages beyond minbase: the init system and device manager under test, jq to read `blkcache list --json`,
# and the desktop's disk service (udisks2 on the system bus; without polkitd it lets root do everything).
PACKAGES=(systemd systemd-sysv udev kmod jq dbus udisks2)
SUITE=bookworm

kdir="${1:?usage: build-root.sh KERNEL_DIR}"
[ -f "$kdir/.complete" ] || die "kernel dir $kdir is incomplete (run fetch-kernel.sh)"
[ "$(id -u)" -eq 0 ] || die "building the systemd guest root needs root (debootstrap, chroot)"
ensure_packages debootstrap cpio kmod

key="$( { printf '%s\n' "${PACKAGES[@]}" "$SUITE"; cat "$0"; } | sha256sum | cut -c1-16)"
out="$CACHE_DIR/systemd-root/$key.cpio"
mods="$CACHE_DIR/systemd-root/$key-modules-$(cat "$kdir/version")-$(sha256sum < "$kdir/.complete" | cut -c1-8).cpio"
mkdir -p "$CACHE_DIR/systemd-root"

# The kernel's modules, as an installed kernel has them: the release name is the modules' vermagic. Under usr/lib:
# the root is merged-/usr, and a lib directory in this cpio would replace the root's lib -> usr/lib link when the
# kernel unpacks it.
if [ ! -f "$mods" ]; then
    first="$kdir/modules/$(head -n1 "$kdir/load-order").ko"
    release="$(modinfo -F vermagic "$first" 2>/dev/null | awk '{print $1}')"
    [ -n "$release" ] || die "cannot read the kernel release from $first"
    mroot="$(mktemp -d "$CACHE_DIR/systemd-root/modules.XXXXXX")"
    chmod 755 "$mroot"
    m="$mroot/usr/lib/modules/$release"
    mkdir -p "$m/kernel/blkcache-test"
    cp "$kdir"/modules/*.ko "$m/kernel/blkcache-test/"
    cp "$kdir/modules.builtin" "$m/"
    (cd "$m" && ls kernel/blkcache-test/*.ko > modules.order && : > modules.builtin.modinfo)
    depmod -b "$mroot/usr" -a "$release" || { rm -rf "$mroot"; die "depmod of the guest modules failed"; }
    (cd "$mroot" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) > "$mods.tmp.$$"
    rm -rf "$mroot"
    mv "$mods.tmp.$$" "$mods"
    log "guest modules $mods (kernel $release)"
fi
if [ -f "$out" ]; then
    echo "$out"
    echo "$mods"
    exit 0
fi

# The Debian mirror the machine itself uses (deb822 .sources or one-line sources.list).
mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            /^$/ { if (ok && uri != "") { print uri; exit } uri = ""; ok = 0 }
            END { if (ok && uri != "") print uri }' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" && $0 ~ (" " suite " ") { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f"
    done
}
url="$(mirror | head -n1)"
[ -n "$url" ] || die "no $SUITE mirror in the machine's apt sources"

root="$(mktemp -d "$CACHE_DIR/systemd-root/build.XXXXXX")"
trap 'rm -rf "$root"' EXIT
log "debootstrap $SUITE minbase + ${PACKAGES[*]} from $url"
pkgs="$(IFS=,; echo "${PACKAGES[*]}")"
debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$root" "$url" > "$root.debootstrap.log" 2>&1 \
    || { tail -n 30 "$root.debootstrap.log" >&2; die "debootstrap failed (log: $root.debootstrap.log)"; }
rm -f "$root.debootstrap.log"

# Only the data the guest needs: no docs, locales, package lists or downloaded packages.
rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*

# Boot straight into systemd; the console stays quiet except for what the scenario prints.
ln -sf /lib/systemd/systemd "$root/init"
echo blkcache-guest > "$root/etc/hostname"
: > "$root/etc/machine-id"
: > "$root/etc/fstab"
for u in getty@tty1.service getty-static.service serial-getty@ttyS0.service serial-getty@ttyS1.service systemd-timesyncd.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
done
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/blkcache-test.conf"

tmp="$out.tmp.$$"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) > "$tmp"
mv "$tmp" "$out"
log "systemd guest root $out: $(du -h "$out" | cut -f1)"
echo "$out"
echo "$mods"
