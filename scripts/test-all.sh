#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs, unit/property/golden tests, and the guest-kernel scenarios.
# Installs what it needs first (Debian packages; the guest kernel is fetched by the harness).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS='-D warnings' cargo doc --no-deps --quiet
echo "== cargo test (host)"
cargo test --lib --bins --tests -- --skip guest:: --skip guest_systemd::
echo "== benches, once each as tests (criterion takes no test-harness flags)"
cargo test --benches
echo "== cargo test guest:: (the QEMU guest scenarios, output shown)"
cargo test --test it guest:: -- --nocapture
echo "== cargo test guest_systemd:: (Debian with systemd and udev in a QEMU guest: the package, insert, swap, eject)"
cargo test --test it guest_systemd:: -- --nocapture
