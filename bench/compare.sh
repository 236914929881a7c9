#!/bin/sh
# compare.sh: measure authmilter against OpenDKIM on this machine and write
# bench/RESULTS.md. Run from anywhere in a checkout; needs Go, OpenDKIM
# (apt-get install opendkim) and, for the verification part, root (a DNS
# server on a 127.x.y.z:53 address, the only port OpenDKIM queries).
#
#   bench/compare.sh                 # full run, about 4 minutes
#   bench/compare.sh -d 2s -warmup 0.5s -conc 8 -out -   # quick look, stdout only
#
# Every flag is passed to bench/compare (see its doc comment, or -h).
set -eu
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
bin=$(mktemp -d "${TMPDIR:-/tmp}/authmilter-bench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT INT TERM
# Linked as `make build` links (Go's linker; see the Makefile).
go build -ldflags=-linkmode=internal -o "$bin/" ./cmd/authmilter ./cmd/milterload ./internal/testdns/testdnsd ./bench/compare
"$bin/compare" -bin "$bin" "$@"
