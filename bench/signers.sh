#!/bin/sh
# signers.sh: the side-by-side comparison with OpenDKIM (bench/compare) once
# per RSA signer (libcrypto, the default cgo build; crypto/rsa, -tags
# nolibcrypto) and per message size (4 KiB with memory and verification,
# 100 KiB signing only; Ed25519 signing once, in the libcrypto 4 KiB run: Go
# signs Ed25519 in both builds). Writes bench/signers/<signer>-<size>.md; the
# summary in bench/RESULTS.md ("Signing with libcrypto (issue 14)") is
# taken from them. About 15 minutes.
#
#   bench/signers.sh                 # -reps 3, every point
#   bench/signers.sh -reps 1 -d 2s   # quicker; flags go to every run
set -eu
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
mkdir -p bench/signers
for signer in openssl go; do
  tags=
  [ "$signer" = go ] && tags=-tags=nolibcrypto
  for size in 4096 102400; do
    extra="-gobench=false"
    [ "$size" = 102400 ] && extra="$extra -unix=false -memory=false -verify=false"
    if [ "$signer" = go ] || [ "$size" = 102400 ]; then extra="$extra -ed25519=false"; fi
    out=bench/signers/$signer-$((size / 1024))k.md
    echo "signers: $signer signer, $size-byte message -> $out (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    # shellcheck disable=SC2086 # $extra and "$@" are lists of flags
    GOFLAGS="${GOFLAGS:-} $tags" bench/compare.sh -reps 3 -size "$size" $extra -out "$out" "$@"
  done
done
