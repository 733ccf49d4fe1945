# Build and install hostd.
#
#   make build                      release build of the whole workspace
#   make install DESTDIR=<dir>      install into <dir>$(PREFIX)
#   make deps | test | test-fast | torture | bench | demo | verify-units

PREFIX ?= /usr
DESTDIR ?=
CARGO ?= cargo

BINDIR := $(PREFIX)/bin
LIBEXECDIR := $(PREFIX)/libexec
UNITDIR := $(PREFIX)/lib/systemd/system
DBUSDIR := $(PREFIX)/share/dbus-1
POLKITDIR := $(PREFIX)/share/polkit-1
DOCDIR := $(PREFIX)/share/doc/hostd
CATALOGDIR := $(PREFIX)/lib/systemd/catalog
PRESETDIR := $(PREFIX)/lib/systemd/system-preset
# Vendor drop-ins of the configuration (an image's defaults; /etc overrides).
VENDORCONFDIR := $(PREFIX)/lib/hostd/hostd.d

# Where `install` takes the binaries from; the booted-system tests install
# stripped copies of the debug build with `make install RELEASE=<dir>`.
RELEASE := target/release
# The D-Bus activation file shares the .service suffix but is not a unit.
ACTIVATION := systemd-units/org.hostd.Host1.service
UNITS := $(filter-out $(ACTIVATION),$(wildcard systemd-units/*.service systemd-units/*.timer systemd-units/*.target))

.PHONY: all build install deps demo demo-cockpit test test-fast torture bench fuzz verify-units

all: build

build:
	$(CARGO) build --release --workspace

# The polkit rules are installed as an example only; enable them by copying
# $(DOCDIR)/examples/50-hostd.rules to /etc/polkit-1/rules.d/. The preset
# enables the timer and the steady-state unit at `systemctl preset` (see
# docs/install.md). The documentation keeps its layout (README.md beside
# docs/), so its links work where the units point (file://$(DOCDIR)).
install:
	install -D -m 0755 $(RELEASE)/hostctl $(DESTDIR)$(BINDIR)/hostctl
	install -D -m 0755 $(RELEASE)/hostd $(DESTDIR)$(LIBEXECDIR)/hostd
	for u in $(UNITS); do \
		install -D -m 0644 $$u $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; \
	done
	install -D -m 0644 $(ACTIVATION) $(DESTDIR)$(DBUSDIR)/system-services/org.hostd.Host1.service
	install -D -m 0644 dbus-interfaces/org.hostd.Host1.conf $(DESTDIR)$(DBUSDIR)/system.d/org.hostd.Host1.conf
	install -D -m 0644 dbus-interfaces/org.hostd.Host1.xml $(DESTDIR)$(DBUSDIR)/interfaces/org.hostd.Host1.xml
	install -D -m 0644 polkit-rules/org.hostd.host1.policy $(DESTDIR)$(POLKITDIR)/actions/org.hostd.host1.policy
	install -D -m 0644 polkit-rules/50-hostd.rules $(DESTDIR)$(DOCDIR)/examples/50-hostd.rules
	install -D -m 0644 systemd-units/hostd.catalog $(DESTDIR)$(CATALOGDIR)/hostd.catalog
	install -D -m 0644 systemd-units/bootc-fetch-apply-updates.service.d/50-hostd.conf \
		$(DESTDIR)$(UNITDIR)/bootc-fetch-apply-updates.service.d/50-hostd.conf
	install -D -m 0644 systemd-units/80-hostd.preset $(DESTDIR)$(PRESETDIR)/80-hostd.preset
	install -d -m 0755 $(DESTDIR)$(VENDORCONFDIR)
	# The bound-image store (docs/bound-images.md), where podman finds it
	# as an additional image store; the same link bootc installs.
	install -d -m 0755 $(DESTDIR)$(PREFIX)/lib/bootc
	ln -sfn /sysroot/ostree/bootc/storage $(DESTDIR)$(PREFIX)/lib/bootc/storage
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -d -m 0755 $(DESTDIR)$(DOCDIR)/docs
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/
	install -d -m 0755 $(DESTDIR)$(DOCDIR)/docs/images
	install -m 0644 docs/images/*.png $(DESTDIR)$(DOCDIR)/docs/images/

# Man pages and shell completions. hostctl's are generated from its command
# line definition by the binary being installed (`hostctl generate-docs`);
# hostd(8), hostd.toml(5) and org.hostd.Host1(5) are written by hand.
MANDIR := $(PREFIX)/share/man
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR := $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR := $(PREFIX)/share/fish/vendor_completions.d
GENERATED_DOCS := target/hostctl-docs
MAN_PAGES := docs/man/hostd.8 docs/man/hostd.toml.5 docs/man/org.hostd.Host1.5

.PHONY: install-man install-cockpit
install: install-man install-cockpit
install-man:
	rm -rf $(GENERATED_DOCS)
	$(RELEASE)/hostctl generate-docs $(GENERATED_DOCS)
	for p in $(GENERATED_DOCS)/man1/*.1 $(MAN_PAGES); do \
		s=$${p##*.}; install -D -m 0644 $$p $(DESTDIR)$(MANDIR)/man$$s/$$(basename $$p) || exit 1; \
	done
	install -D -m 0644 $(GENERATED_DOCS)/completions/hostctl $(DESTDIR)$(BASHCOMPDIR)/hostctl
	install -D -m 0644 $(GENERATED_DOCS)/completions/_hostctl $(DESTDIR)$(ZSHCOMPDIR)/_hostctl
	install -D -m 0644 $(GENERATED_DOCS)/completions/hostctl.fish $(DESTDIR)$(FISHCOMPDIR)/hostctl.fish

# The Cockpit page (docs/cockpit.md): static files, no build step.
COCKPITDIR := $(PREFIX)/share/cockpit/hostd
COCKPIT_FILES := manifest.json index.html hostd.js hostd.css
install-cockpit:
	for f in $(COCKPIT_FILES); do \
		install -D -m 0644 client/cockpit/$$f $(DESTDIR)$(COCKPITDIR)/$$f || exit 1; \
	done

deps:
	bash scripts/deps

demo: deps
	bash scripts/demo

# The Cockpit page's browser tests (tests/tests/cockpit.rs), keeping a
# screenshot of every state they reach in target/cockpit-demo/.
COCKPIT_SHOTS := target/cockpit-demo
demo-cockpit: deps
	$(CARGO) build -p hostd -p hostctl
	rm -rf $(COCKPIT_SHOTS)
	HOSTD_COCKPIT_SHOTS=$(CURDIR)/$(COCKPIT_SHOTS) $(CARGO) test -p hostd-tests --test cockpit -- --test-threads=2
	@echo "screenshots: $(COCKPIT_SHOTS)/"

test: deps
	bash scripts/test

test-fast:
	bash scripts/test --fast

# tests/tests/torture.rs with 50 kill -9 trials per operation (make test runs
# 5); HOSTD_TORTURE_SEED=<n> repeats a run.
TORTURE_TRIALS ?= 50
torture: deps
	$(CARGO) build --workspace --all-targets --features hostd/failpoints
	HOSTD_TORTURE_TRIALS=$(TORTURE_TRIALS) $(CARGO) test -p hostd-tests --test torture -- --test-threads=2 --nocapture

# bench/ against a release build: every figure of docs/performance.md, one
# line each, then a summary (about 10 minutes; the images are built once
# into the test cache, /var/cache/hostd-tests or HOSTD_TEST_CACHE).
bench: deps
	$(CARGO) build --release -p hostd -p hostctl -p hostd-bench
	target/release/hostd-bench

# The property tests of the image-reference and options parsers, long and
# with a fresh random seed (make test runs them seeded and short). Inputs
# that fail are saved under */proptest-regressions/: commit them.
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p hostd -p hostd-interface properties

# systemd-analyze verify also checks that ExecStart= binaries exist, so the
# units are checked in a temporary copy pointing at built ones (BINARIES:
# target/debug after `cargo build`, target/release after `make build`).
# It exits 0 on mere warnings (unknown keys, ...); any output fails here.
# bootc's update service (as bootc ships it, tests/src/booted/bootc/) is
# checked with hostd's drop-in, which alone makes it valid without bootc.
BINARIES ?= target/debug
BOOTC_UNITS := tests/src/booted/bootc/bootc-fetch-apply-updates.service tests/src/booted/bootc/bootc-fetch-apply-updates.timer
BOOTC_DROPIN := bootc-fetch-apply-updates.service.d/50-hostd.conf
verify-units:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/$(dir $(BOOTC_DROPIN))"; \
	cp $(BOOTC_UNITS) "$$tmp/"; \
	for u in $(notdir $(UNITS)) $(BOOTC_DROPIN); do \
		sed -e 's|/usr/libexec/hostd|$(CURDIR)/$(BINARIES)/hostd|g' \
		    -e 's|/usr/bin/hostctl|$(CURDIR)/$(BINARIES)/hostctl|g' \
		    systemd-units/$$u > "$$tmp/$$u"; \
	done; \
	out=$$(SYSTEMD_UNIT_PATH="$$tmp:" systemd-analyze verify --man=no \
		$(addprefix "$$tmp"/,$(notdir $(UNITS) $(BOOTC_UNITS))) 2>&1) || rc=$$?; \
	if [ -n "$$out" ]; then printf '%s\n' "$$out"; exit 1; fi; \
	[ -z "$${rc:-}" ] || exit $$rc; \
	mkdir -p "$$tmp/root/usr/lib/systemd/catalog"; \
	cp systemd-units/hostd.catalog "$$tmp/root/usr/lib/systemd/catalog/"; \
	journalctl --root="$$tmp/root" --update-catalog; \
	n=$$(journalctl --root="$$tmp/root" --list-catalog | grep -c ' hostd: '); \
	[ "$$n" = 10 ] || { echo "hostd.catalog: $$n of 10 entries parsed"; exit 1; }
