# Convenience targets. The guest targets boot Debian's 6.12 kernel under QEMU TCG (see tests/guest/README.md).
# GUEST_ARGS passes options to tests/guest/run.sh, e.g. make test-guest GUEST_ARGS=--no-build
.PHONY: all build test test-guest test-guest-systemd deb install uninstall bench-guest demo guest-shell clean-guest

all: build

build:
	cargo build --release

test:
	cargo test

# Installation for systems without the Debian package (`cargo deb` builds that: see README). The same files as the
# package: the binary in $(PREFIX)/bin, the unit and the udev rules where systemd and udev read them, each naming
# the installed binary; then systemd and udev reload (skipped when staging into DESTDIR).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= /lib/systemd/system
UDEVRULESDIR ?= /lib/udev/rules.d
BIN ?= target/release/blkcache

target/release/blkcache:
	cargo build --release

install: $(BIN)
	install -D -m 755 $(BIN) $(DESTDIR)$(BINDIR)/blkcache
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(UDEVRULESDIR)
	sed 's|/usr/bin/blkcache|$(BINDIR)/blkcache|g' systemd/blkcache@.service > $(DESTDIR)$(UNITDIR)/blkcache@.service
	sed 's|/usr/bin/blkcache|$(BINDIR)/blkcache|g' udev/61-blkcache.rules > $(DESTDIR)$(UDEVRULESDIR)/61-blkcache.rules
	chmod 644 $(DESTDIR)$(UNITDIR)/blkcache@.service $(DESTDIR)$(UDEVRULESDIR)/61-blkcache.rules
	if [ -z "$(DESTDIR)" ]; then packaging/debian/postinst configure; fi

uninstall:
	if [ -z "$(DESTDIR)" ]; then packaging/debian/prerm remove; fi
	rm -f $(DESTDIR)$(BINDIR)/blkcache $(DESTDIR)$(UNITDIR)/blkcache@.service $(DESTDIR)$(UDEVRULESDIR)/61-blkcache.rules
	if [ -z "$(DESTDIR)" ]; then packaging/debian/postrm remove; fi

# The Debian package (target/debian/blkcache_*.deb): `cargo deb` if installed, else dpkg-deb from the same metadata.
deb:
	tests/guest/systemd/build-deb.sh

# The systemd + udev guest scenarios: the package installed with dpkg -i, discs inserted and swapped from the host.
test-guest-systemd:
	tests/guest/systemd/run.sh all

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
