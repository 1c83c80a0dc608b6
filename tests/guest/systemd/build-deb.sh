#!/usr/bin/env bash
# Build the blkcache Debian package from Cargo.toml's [package.metadata.deb] and print its path. The binary is the
# static release build the guest harness also uses (target/x86_64-unknown-linux-gnu/release/blkcache).
# With cargo-deb installed (`cargo install cargo-deb --locked`) the package is `cargo deb`'s; without it, the same
# metadata (assets, maintainer scripts, control fields) is packed with dpkg-deb, because installing cargo-deb
# from source takes many minutes on a fresh machine. BLKCACHE_CARGO_DEB=1 installs cargo-deb if it is missing.
# Usage: build-deb.sh
# Must never install anything on the host other than Debian build tools (and cargo-deb when asked).
set -euo pipefail
. "$(dirname "$0")/../common.sh"

TARGET=x86_64-unknown-linux-gnu
cd "$REPO_ROOT"
ensure_packages libclang-dev jq dpkg-dev binutils
log "building static blkcache (release, crt-static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --target "$TARGET" --bin blkcache >&2 \
    || die "cargo build of the static blkcache failed"

if [ "${BLKCACHE_CARGO_DEB:-0}" = 1 ] && ! cargo deb --version > /dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install cargo-deb --locked --quiet >&2 || die "cargo install cargo-deb failed"
fi
if cargo deb --version > /dev/null 2>&1; then
    deb="$(RUSTFLAGS='-C target-feature=+crt-static' cargo deb --no-build --strip --target "$TARGET" 2>/dev/null | tail -n1)"
    [ -f "$deb" ] || die "cargo deb made no package"
    echo "$deb"
    exit 0
fi

# The same package from the same metadata, with dpkg-deb.
meta="$(cargo metadata --format-version 1 --no-deps | jq '.packages[] | select(.name == "blkcache")')"
field() { jq -r "$1 // empty" <<< "$meta"; }
name="$(field .name)" version="$(field .version)"
out_dir="$REPO_ROOT/target/debian"
stage="$(mktemp -d "$REPO_ROOT/target/deb-stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/DEBIAN" "$out_dir"
n_assets="$(field '.metadata.deb.assets | length')"
for ((i = 0; i < n_assets; i++)); do
    src="$(field ".metadata.deb.assets[$i][0]")" dest="$(field ".metadata.deb.assets[$i][1]")"
    mode="$(field ".metadata.deb.assets[$i][2]")"
    # cargo-deb's rule: target/release/ means the build of the target being packaged.
    case "$src" in target/release/*) src="target/$TARGET/release/${src#target/release/}" ;; esac
    [ -f "$src" ] || die "package asset $src is missing"
    case "$dest" in */) dest="$dest$(basename "$src")" ;; esac
    install -D -m "$mode" "$src" "$stage/$dest"
    case "$src" in target/*) strip "$stage/$dest" ;; esac
done
scripts="$(field '.metadata.deb."maintainer-scripts"')"
for s in preinst postinst prerm postrm; do
    [ -f "$scripts/$s" ] && install -m 755 "$scripts/$s" "$stage/DEBIAN/$s"
done
# $auto (shared-library dependencies) is empty for the static binary.
depends="$(field .metadata.deb.depends | sed -e 's/\$auto *,* *//' -e 's/^, *//')"
{
    echo "Package: $name"
    echo "Version: $version-1"
    echo "Architecture: $(dpkg --print-architecture)"
    echo "Maintainer: $(field .metadata.deb.maintainer)"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Recommends: $(field .metadata.deb.recommends)"
    echo "Section: $(field .metadata.deb.section)"
    echo "Priority: $(field .metadata.deb.priority)"
    echo "Homepage: $(field .homepage)"
    echo "Description: $(field .description)"
    field '.metadata.deb."extended-description"' | fold -s -w 78 | sed -e 's/ *$//' -e 's/^/ /'
} | grep -v ': $' > "$stage/DEBIAN/control"
deb="$out_dir/${name}_${version}-1_$(dpkg --print-architecture).deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" > /dev/null || die "dpkg-deb failed"
log "package $deb (dpkg-deb from [package.metadata.deb]; cargo-deb is not installed)"
echo "$deb"
