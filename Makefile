# postie: build, test, run, install, package.
#
#   make                 build target/release/postie (as yourself, not root)
#   make check           everything CI checks but the package test
#   sudo make install    install the built binary, man pages and config
#   make deb             build the Debian package into dist/
#   sudo make bench      postie against Postfix (bench/run-all; BENCHMARKS.md)
#
# Installation directories (GNU style; DESTDIR is prepended to all):
#   PREFIX      /usr/local
#   SBINDIR     $(PREFIX)/sbin            postie
#   BINDIR      $(PREFIX)/bin             mailq, newaliases (install-sendmail)
#   MANDIR      $(PREFIX)/share/man
#   LIBDIR      $(PREFIX)/lib              the sendmail link (install-sendmail)
#   SYSCONFDIR  /etc, whatever PREFIX: postie reads /etc/postie/postie.conf
#               unless started with -C FILE.
#   SYSTEMDUNITDIR  $(PREFIX)/lib/systemd/system (install-systemd)
#   QUEUEDIR    /var/spool/postie, whatever PREFIX: postie's default
#               --queue-dir; made mode 0700, owned by who installs (root).

CARGO ?= cargo
SPOOL ?= spool
LISTEN ?= 127.0.0.1:2525

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
LIBDIR ?= $(PREFIX)/lib
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
QUEUEDIR ?= /var/spool/postie
DESTDIR ?=

CARGO_TARGET_DIR ?= target
BIN := $(CARGO_TARGET_DIR)/release/postie
MANPAGES := $(wildcard man/*.[0-9])
UNITS := postie.socket postie.service postie-inetd.socket postie-inetd@.service \
	postie-queue.service postie-queue.timer
INSTALL ?= install

.PHONY: all check test lint man-lint run clean \
	install uninstall install-sendmail uninstall-sendmail \
	install-systemd uninstall-systemd deb deb-build-deps bench bench-quick

all:
	$(CARGO) build --release

# Everything CI checks (.ci/run also builds and tests the Debian package).
check: test man-lint lint

test:
	$(CARGO) test

man-lint:
	mandoc -Tlint -W warning man/*.[0-9]

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# The benchmark against a private Postfix, as root (BENCHMARKS.md): builds,
# fetches Postfix into bench/.postfix, writes bench/results/DATE.md.
bench:
	bench/run-all

bench-quick:
	bench/run-all --quick

# A postie for the current user on a loopback port, spool under ./spool.
run:
	mkdir -p $(SPOOL)
	$(CARGO) run --release -- serve --listen $(LISTEN) --spool $(SPOOL) --log stderr

# `install` never builds: cargo would run as root and leave root-owned
# files in target/ and ~/.cargo. Build first as yourself with `make`.
# The binary is installed stripped (-s), as the .deb's is: the release
# profile keeps debug information (for the package's dbgsym), 26 MB of
# the 29.
install:
	@test -x $(BIN) || { \
	  echo "make install: $(BIN) is missing: run make first (not as root)" >&2; \
	  exit 1; }
	$(INSTALL) -d $(DESTDIR)$(SBINDIR)
	$(INSTALL) -s -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/postie
	@set -e; for page in $(MANPAGES); do \
	  section=$${page##*.}; \
	  echo "$(INSTALL) -m 0644 $$page $(DESTDIR)$(MANDIR)/man$$section/"; \
	  $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$section; \
	  $(INSTALL) -m 0644 $$page $(DESTDIR)$(MANDIR)/man$$section/; \
	done
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/postie
	@conf=$(DESTDIR)$(SYSCONFDIR)/postie/postie.conf; \
	if [ -e "$$conf" ]; then \
	  echo "keeping the existing $$conf (the example is packaging/postie.conf)"; \
	else \
	  echo "$(INSTALL) -m 0644 packaging/postie.conf $$conf"; \
	  $(INSTALL) -m 0644 packaging/postie.conf "$$conf"; \
	fi
	@queue=$(DESTDIR)$(QUEUEDIR); \
	if [ -e "$$queue" ]; then \
	  echo "keeping the existing $$queue (postie check says if it is safe)"; \
	else \
	  echo "$(INSTALL) -d -m 0700 $$queue"; \
	  $(INSTALL) -d -m 0700 "$$queue"; \
	fi
	@if [ "$(SYSCONFDIR)" != /etc ]; then \
	  echo "note: postie reads /etc/postie/postie.conf; run it with" \
	       "-C $(SYSCONFDIR)/postie/postie.conf"; \
	fi

# The configuration file is left in place: it may hold local changes; so
# is the queue: it may hold mail.
uninstall: uninstall-sendmail uninstall-systemd
	rm -f $(DESTDIR)$(SBINDIR)/postie
	@set -e; for page in $(MANPAGES); do \
	  section=$${page##*.}; name=$${page##*/}; \
	  echo "rm -f $(DESTDIR)$(MANDIR)/man$$section/$$name"; \
	  rm -f $(DESTDIR)$(MANDIR)/man$$section/$$name; \
	done
	@echo "left in place: $(DESTDIR)$(SYSCONFDIR)/postie/postie.conf and the queue $(DESTDIR)$(QUEUEDIR)"

# sendmail (in SBINDIR and, as postie(8) lists, LIBDIR: /usr/lib/sendmail
# with PREFIX=/usr), mailq and newaliases as links to postie, which acts as
# each when called by that name. Not part of `install`: in /usr/local/sbin
# a sendmail would hide the system MTA's /usr/sbin/sendmail.
install-sendmail:
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)
	ln -sf postie $(DESTDIR)$(SBINDIR)/sendmail
	ln -sf $(SBINDIR)/postie $(DESTDIR)$(LIBDIR)/sendmail
	ln -sf $(SBINDIR)/postie $(DESTDIR)$(BINDIR)/mailq
	ln -sf $(SBINDIR)/postie $(DESTDIR)$(BINDIR)/newaliases

# Removes only links that point to postie.
uninstall-sendmail:
	@for link in $(DESTDIR)$(SBINDIR)/sendmail $(DESTDIR)$(LIBDIR)/sendmail \
	             $(DESTDIR)$(BINDIR)/mailq $(DESTDIR)$(BINDIR)/newaliases; do \
	  case "$$(readlink "$$link" 2>/dev/null)" in \
	    postie|*/postie) echo "rm -f $$link"; rm -f "$$link";; \
	  esac; \
	done

# The systemd units of packaging/, with postie's path set to SBINDIR.
# Afterwards: systemctl daemon-reload && systemctl enable --now postie.socket
# (and postie-queue.timer, which runs the queue where no daemon stays)
install-systemd:
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	@set -e; for unit in $(UNITS); do \
	  echo "install packaging/$$unit $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit"; \
	  sed 's|/usr/sbin/postie|$(SBINDIR)/postie|g' packaging/$$unit \
	    > $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit.tmp; \
	  chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit.tmp; \
	  mv $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit.tmp $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit; \
	done

uninstall-systemd:
	@for unit in $(UNITS); do \
	  if [ -e $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit ]; then \
	    echo "rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit"; \
	    rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit; \
	  fi; \
	done

# The Debian package, into dist/ (see debian/README.source). -d: the
# Build-Depends on Debian's cargo and rustc are not checked, as Debian 12's
# rustc is too old; cargo comes from PATH (rustup). The others (debhelper)
# are checked first, so that a missing one is named (dpkg-buildpackage -d
# would fail with "dh: No such file or directory").
DEB_VERSION = $(shell dpkg-parsechangelog -SVersion)
DEB_ARCH = $(shell dpkg-architecture -qDEB_HOST_ARCH)
DEB_CHANGES = postie_$(DEB_VERSION)_$(DEB_ARCH)
deb: deb-build-deps
	rm -rf dist
	mkdir -p dist
	POSTIE_DEB_DESTDIR=$(CURDIR)/dist dpkg-buildpackage -us -uc -b -d \
	  --buildinfo-option=-u$(CURDIR)/dist \
	  --buildinfo-file=$(CURDIR)/dist/$(DEB_CHANGES).buildinfo \
	  --changes-option=-u$(CURDIR)/dist \
	  --changes-file=$(CURDIR)/dist/$(DEB_CHANGES).changes
	@ls -l dist

# Build-Depends of debian/control but cargo and rustc (see deb).
# dpkg-checkbuilddeps reads DPKG_ADMINDIR only as --admindir: passed on,
# so that .ci/make-test can play a machine without debhelper.
deb-build-deps:
	@command -v dpkg-buildpackage >/dev/null && command -v dpkg-checkbuilddeps >/dev/null || { \
	  echo "make deb: dpkg-buildpackage is missing: apt-get install dpkg-dev debhelper" >&2; \
	  exit 1; }
	@deps=$$(sed -n '/^Build-Depends:/,/^[^[:space:]]/{/^Build-Depends:/{s/^Build-Depends://;p;d};/^[[:space:]]/p}' debian/control \
	  | tr ',' '\n' | sed 's/^[[:space:]]*//; s/[[:space:]]*$$//' \
	  | grep -Ev '^(cargo|rustc)([[:space:](]|$$)' | grep -v '^$$' | paste -sd, -); \
	dpkg-checkbuilddeps $${DPKG_ADMINDIR:+--admindir=$$DPKG_ADMINDIR} -d "$$deps" || { \
	  echo "make deb: install the build dependencies named above" \
	       "(debhelper-compat comes with debhelper): apt-get install debhelper" >&2; \
	  exit 1; }

clean:
	$(CARGO) clean
	rm -rf $(SPOOL) dist
	rm -rf debian/.debhelper debian/postie debian/postie-dbgsym \
	  debian/files debian/*.substvars debian/*.debhelper.log \
	  debian/*.debhelper debian/debhelper-build-stamp
