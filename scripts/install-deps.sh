#!/usr/bin/env bash
# Installs the Debian packages blkcache's build, tests and guest harness need, if any is missing.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail

packages=(gddrescue qemu-system-x86 busybox-static libclang-dev xorriso xz-utils cpio kmod strace util-linux fuse3
    libnbd-bin python3-libnbd qemu-utils)

find_missing() {
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
}
find_missing
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    as_root=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Installing one package can remove another: a backported qemu-utils gives way to Debian 12's qemu-system-x86.
# Install whatever went missing again (now from the same release as the rest).
find_missing
if [ ${#missing[@]} -ne 0 ]; then
    echo "install-deps: installing again what the first install removed: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
find_missing
[ ${#missing[@]} -eq 0 ] || { echo "install-deps: still missing after install: ${missing[*]}" >&2; exit 1; }
