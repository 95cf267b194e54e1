# postie: build, test, run. `make install` and the Debian package come with
# issue 3/4; these targets never need root.

CARGO ?= cargo
SPOOL ?= spool
LISTEN ?= 127.0.0.1:2525

.PHONY: all check test lint man-lint run clean

all:
	$(CARGO) build --release

# Everything CI checks.
check: test man-lint lint

test:
	$(CARGO) test

man-lint:
	mandoc -Tlint -W warning man/*.[0-9]

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# A postie for the current user on a loopback port, spool under ./spool.
run:
	mkdir -p $(SPOOL)
	$(CARGO) run --release -- serve --listen $(LISTEN) --spool $(SPOOL) --log stderr

clean:
	$(CARGO) clean
	rm -rf $(SPOOL)
