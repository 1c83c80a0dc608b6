#!/usr/bin/env bash
# Generate the guest's test data in DIR: an ISO9660 image (Rock Ridge + Joliet) of a few MiB of generated files,
# the SHA-256 manifest of those files (paths relative to the ISO root), the image's own checksum, and a small
# second image (other.iso) for media changes.
# Usage: make-data.sh DIR [SIZE_MIB]   (default 6 MiB of file data)
# Must never write outside DIR.
set -euo pipefail
. "$(dirname "$0")/common.sh"

dir="${1:?usage: make-data.sh DIR [SIZE_MIB]}"
mib="${2:-6}"
ensure_packages xorriso
rm -rf "$dir"
mkdir -p "$dir/tree/docs" "$dir/tree/media/deep/er"
tree="$dir/tree"
# A mix of sizes: sector-sized, odd-sized, and large files spanning many 2048-byte sectors.
seq 1 2000 | sed 's/^/line /' > "$tree/docs/readme.txt"
head -c 2048 /dev/urandom > "$tree/docs/one-sector.bin"
head -c 12345 /dev/urandom > "$tree/media/odd-size.bin"
half=$((mib * 1024 * 1024 / 2))
head -c "$half" /dev/urandom > "$tree/media/big-a.bin"
head -c $((half - 300000)) /dev/urandom > "$tree/media/deep/er/big-b.bin"
(cd "$tree" && find . -type f | LC_ALL=C sort | xargs sha256sum) > "$dir/manifest.sha256"
xorriso -as mkisofs -quiet -R -J -V BLKCACHE_TEST -o "$dir/test.iso" "$tree" 2>/dev/null \
    || die "xorriso could not make $dir/test.iso"
size=$(stat -c %s "$dir/test.iso")
[ $((size % 2048)) -eq 0 ] || die "$dir/test.iso is not a whole number of 2048-byte sectors ($size)"
sha256sum < "$dir/test.iso" | cut -d' ' -f1 > "$dir/test.iso.sha256"
# A second, small disc for media-change tests (HOSTCMD change cd0 @DATA@/other.iso raw read-only).
mkdir -p "$dir/other"
head -c 300000 /dev/urandom > "$dir/other/other.bin"
xorriso -as mkisofs -quiet -R -V BLKCACHE_OTHER -o "$dir/other.iso" "$dir/other" 2>/dev/null \
    || die "xorriso could not make $dir/other.iso"
rm -rf "$dir/other"
rm -rf "$tree"
log "test data in $dir: test.iso $((size / 1024)) KiB"
