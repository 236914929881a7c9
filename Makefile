# authmilter — see README.md.
GO ?= go
BIN := bin/authmilter
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build run test test-unit vet deps bench fuzz soak clean

# RSA signatures are made by OpenSSL's libcrypto (cgo; needs libssl-dev,
# pkg-config and a C compiler) when the machine has it, by Go's crypto/rsa
# otherwise (-tags nolibcrypto, or CGO_ENABLED=0; not -tags purego, which
# also turns off the assembly of Go's crypto and doubles its RSA cost), so
# that `make run` works before `make deps`. Linked by Go's own linker, as a
# pure Go binary is: with the external one (cgo's default) the daemon starts
# with about 7 MiB more resident (bench/RESULTS.md).
PKG_CONFIG ?= pkg-config
build:
	@tags=; cgo=; cc=$$($(GO) env CC); \
	if [ "$$($(GO) env CGO_ENABLED)" != 1 ] || ! command -v "$${cc%% *}" >/dev/null 2>&1; then \
		cgo=CGO_ENABLED=0; \
		echo "note: cgo is off (no C compiler, or CGO_ENABLED=0): building with the Go RSA signer"; \
	elif ! $(PKG_CONFIG) --exists libcrypto 2>/dev/null; then \
		tags="-tags nolibcrypto"; \
		echo "note: libcrypto not found (apt-get install libssl-dev pkg-config): building with the Go RSA signer"; \
	fi; \
	echo "$${cgo:+$$cgo }$(GO) build $$tags -o $(BIN) ./cmd/authmilter"; \
	env $$cgo $(GO) build $$tags -ldflags "-linkmode=internal -X main.version=$(VERSION)" -o $(BIN) ./cmd/authmilter

# Builds and starts the daemon with the built-in defaults (or
# /etc/authmilter/authmilter.toml if present); CONFIG=file to choose.
run: build
	$(BIN) run $(if $(CONFIG),-config $(CONFIG))

# make build, then as root: make install. Installs the binary, the systemd
# unit, the sysusers.d and tmpfiles.d files, the example config (only if
# /etc/authmilter/authmilter.toml does not exist yet), and README.md with the
# Postfix and Sendmail snippets in DOCDIR. DESTDIR and the directories below
# can be set for packaging (e.g. PREFIX=/usr UNITDIR=/usr/lib/systemd/system).
# Builds only if $(BIN) is missing (root's PATH often has no go).
PREFIX ?= /usr/local
DOCDIR ?= $(PREFIX)/share/doc/authmilter
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /etc/sysusers.d
TMPFILESDIR ?= /etc/tmpfiles.d
.PHONY: install
install:
	@test -x $(BIN) || $(MAKE) build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)/etc/authmilter
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/authmilter
	sed -e 's|/usr/local/bin/authmilter|$(PREFIX)/bin/authmilter|g' \
		-e 's|/usr/local/share/doc/authmilter|$(DOCDIR)|g' \
		contrib/authmilter.service > $(DESTDIR)$(UNITDIR)/authmilter.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/authmilter.service
	install -m 0644 contrib/authmilter.sysusers $(DESTDIR)$(SYSUSERSDIR)/authmilter.conf
	install -m 0644 contrib/authmilter.tmpfiles $(DESTDIR)$(TMPFILESDIR)/authmilter.conf
	install -m 0644 README.md contrib/authmilter.toml contrib/postfix-main.cf \
		contrib/postfix-master.cf contrib/sendmail.mc $(DESTDIR)$(DOCDIR)
	@if [ -e $(DESTDIR)/etc/authmilter/authmilter.toml ]; then \
		echo "kept $(DESTDIR)/etc/authmilter/authmilter.toml (the new example is $(DESTDIR)$(DOCDIR)/authmilter.toml)"; \
	else \
		echo "install -m 0644 contrib/authmilter.toml $(DESTDIR)/etc/authmilter/authmilter.toml"; \
		install -m 0644 contrib/authmilter.toml $(DESTDIR)/etc/authmilter/authmilter.toml; \
	fi
	@echo "Next, as root: systemd-sysusers && systemd-tmpfiles --create authmilter.conf && systemctl daemon-reload && systemctl enable --now authmilter"

deps:
	scripts/install-deps.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# The whole suite: unit, integration, interop (dkimpy, OpenDKIM) and
# end-to-end (Postfix) tests. Installs the peers first (needs root once).
test: deps vet
	$(GO) test -count=1 -timeout 15m ./...

test-unit:
	$(GO) test -count=1 -short ./...

bench: build
	bench/compare.sh

# The scale benchmark (bench/SCALE.md): 1k, 10k and 100k domain key
# tables, start, reload, memory, DNS queries and signing throughput. About
# 10 minutes on today's code; SCALE="-domains 1000 -out FILE" to choose.
.PHONY: bench-scale
bench-scale: build
	$(GO) run ./bench/scale -binary $(BIN) $(SCALE)

# Load benchmark of the key DNS server ([keydns]) with dnsperf (installed
# if missing): queries/s and latency at 100k domains, about 2 minutes;
# KEYDNS="-domains 10000 -d 5s" to choose.
.PHONY: bench-keydns
bench-keydns:
	GO=$(GO) bench/keydns.sh $(KEYDNS)

# Every fuzz target, one after another, FUZZTIME each (wall clock, one
# worker); prints a summary. Results of the last run are in the README.
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

# The soak test (build tag soak, not in make test): 10,000 messages with
# SIGHUP every second while DNS drops 20% of queries. About a minute.
soak:
	$(GO) test -tags soak -count=1 -timeout 30m -v ./test/soak

clean:
	rm -rf bin
