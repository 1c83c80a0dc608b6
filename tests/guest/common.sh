# Shared settings and helpers for the guest harness scripts (sourced, bash only).
# Holds: paths (repo root, cache dir), package installation, logging. Must never touch the host's block devices.

GUEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$GUEST_DIR/../.." && pwd)"
CACHE_DIR="${BLKCACHE_GUEST_CACHE:-$REPO_ROOT/.guest-cache}"

log() { printf 'guest: %s\n' "$*" >&2; }
die() { printf 'guest: error: %s\n' "$*" >&2; exit 1; }

# ensure_packages PKG... : install the Debian packages that are missing (apt-get update once first).
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root or install them: apt-get install ${missing[*]})"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# The packages every part of the harness needs.
HARNESS_PACKAGES=(qemu-system-x86 busybox-static libclang-dev xorriso xz-utils cpio gddrescue)
