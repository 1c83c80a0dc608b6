#!/usr/bin/env bash
# Fetch a Debian kernel into the cache: vmlinuz plus the decompressed modules the guest needs (and their
# dependencies), with a load order. Prints the kernel directory.
# Usage: fetch-kernel.sh [--kernel 6.12|6.1]      (uses $BLKCACHE_GUEST_CACHE, default <repo>/.guest-cache)
#   6.12 (default): the newest linux-image-6.12.N+deb12-amd64-unsigned (backports; has ublk_drv)
#   6.1:            Debian 12's own newest linux-image-6.1.0-N-amd64-unsigned (no ublk; has nbd)
# Must never install the kernel on the host: the package is only unpacked into the cache.
set -euo pipefail
. "$(dirname "$0")/common.sh"

kernel=6.12
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel="$2"; shift ;;
        *) die "usage: fetch-kernel.sh [--kernel 6.12|6.1]" ;;
    esac
    shift
done
# The modules the scenarios use; their dependencies are resolved from each module's own .modinfo. 6.1 has no ublk:
# its guests use the nbd driver; its crc-t10dif and crc64-rocksoft need their generic crypto (soft dependencies).
case "$kernel" in
    6.12)
        pattern='^linux-image-6\.12\.[0-9]+[+]deb12-amd64-unsigned$'
        WANTED_MODULES=(scsi_common scsi_mod cdrom sr_mod sd_mod isofs virtio_scsi ublk_drv nbd loop scsi_debug crc32c_generic ext4)
        ;;
    6.1)
        pattern='^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$'
        WANTED_MODULES=(crct10dif_generic crc64_rocksoft_generic scsi_common scsi_mod cdrom sr_mod sd_mod isofs
            virtio_pci virtio_scsi nbd loop scsi_debug)
        ;;
    *) die "unknown kernel '$kernel' (6.12 or 6.1)" ;;
esac

ensure_packages xz-utils
pkg="$(apt-cache search "$pattern" 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)"
if [ -z "$pkg" ]; then
    [ "$(id -u)" -eq 0 ] || die "no package matches $pattern in apt's lists (run apt-get update as root)"
    log "no $pattern in apt's lists; running apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    pkg="$(apt-cache search "$pattern" 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)"
    [ -n "$pkg" ] || die "no package matches $pattern even after apt-get update"
fi

final="$CACHE_DIR/kernel/$pkg"
# .complete names the modules fetched: a longer list fetches again (into a new directory, swapped in
# whole at the end, so a run using the old one meanwhile is not disturbed).
if [ -f "$final/.complete" ] && [ "$(cat "$final/.complete")" = "${WANTED_MODULES[*]}" ]; then
    echo "$final"
    exit 0
fi

log "fetching $pkg"
kdir="$final.new.$$"
rm -rf "$kdir"
mkdir -p "$kdir/modules"
work="$(mktemp -d "$CACHE_DIR/fetch.XXXXXX")"
trap 'rm -rf "$work" "$kdir"' EXIT
(cd "$work" && apt-get download "$pkg" >&2) || die "apt-get download $pkg failed"
dpkg -x "$work"/*.deb "$work/x" || die "dpkg -x failed on $pkg"
cp "$work"/x/boot/vmlinuz-* "$kdir/vmlinuz"
cp "$work"/x/boot/config-* "$kdir/config"
moddir="$(ls -d "$work"/x/lib/modules/*)"
cp "$moddir/modules.builtin" "$kdir/modules.builtin"

# resolve NAME: decompress the module, then its dependencies first; appends to load-order once.
declare -A seen=()
order=()
resolve() {
    local name="$1" rel deps d
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    if grep -q "/$name\.ko\$" "$kdir/modules.builtin"; then
        return 0 # built into the kernel
    fi
    rel="$(grep -E "/$name\.ko\$" "$moddir/modules.order" | head -n1)" || true
    [ -n "$rel" ] || die "module $name is neither in modules.order nor built in ($pkg)"
    if [ -f "$moddir/$rel.xz" ]; then
        xz -dc "$moddir/$rel.xz" > "$kdir/modules/$name.ko" || die "cannot decompress $rel.xz"
    else
        cp "$moddir/$rel" "$kdir/modules/$name.ko" || die "no module file $rel ($pkg)"
    fi
    deps="$(tr '\0' '\n' < "$kdir/modules/$name.ko" | grep -a '^depends=' | head -n1 | cut -d= -f2)"
    for d in ${deps//,/ }; do
        resolve "$d"
    done
    order+=("$name")
}
for m in "${WANTED_MODULES[@]}"; do
    resolve "$m"
done
printf '%s\n' "${order[@]}" > "$kdir/load-order"
echo "${pkg#linux-image-}" > "$kdir/version"
echo "${WANTED_MODULES[*]}" > "$kdir/.complete"
rm -rf "$final.old.$$"
[ -d "$final" ] && mv "$final" "$final.old.$$"
mv "$kdir" "$final"
rm -rf "$final.old.$$"
log "kernel $pkg ready in $final ($(wc -l < "$final/load-order") modules)"
echo "$final"
