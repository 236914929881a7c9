# authmilter — see README.md.
GO ?= go
BIN := bin/authmilter
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build run test test-unit vet deps bench fuzz soak clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/authmilter

# Builds and starts the daemon with the built-in defaults (or
# /etc/authmilter/authmilter.toml if present); CONFIG=file to choose.
run: build
	$(BIN) run $(if $(CONFIG),-config $(CONFIG))

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
