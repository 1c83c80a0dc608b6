# Convenience targets. The guest targets boot Debian's 6.12 kernel under QEMU TCG (see tests/guest/README.md).
# GUEST_ARGS passes options to tests/guest/run.sh, e.g. make test-guest GUEST_ARGS=--no-build
.PHONY: all build test test-guest bench-guest demo guest-shell clean-guest

all: build

build:
	cargo build --release

test:
	cargo test

# Every guest scenario (real ublk in a QEMU guest); fails unless each one prints PASS.
test-guest:
	tests/guest/run.sh $(GUEST_ARGS) all

# ublk vs loop read throughput in the guest (TCG figures: compare the two, not the absolute numbers).
bench-guest:
	tests/guest/bench.sh $(GUEST_ARGS)

# The emulated CD drive through blkcache: add, mount, read files, show `blkcache status`.
demo:
	tests/guest/demo.sh $(GUEST_ARGS)

# An interactive busybox shell in the guest (exit it to power off).
guest-shell:
	tests/guest/run.sh $(GUEST_ARGS) --shell

clean-guest:
	rm -rf .guest-cache
