"""Sign a message with dkimpy and print the signed message.

Used by the Go package internal/interop (embedded with go:embed); run it
with Debian's /usr/bin/python3, which has python3-dkim.

Usage: python3 dkimpy_sign.py SELECTOR DOMAIN KEYFILE HEADER_CANON BODY_CANON ALGO < message

KEYFILE holds a PEM RSA key (PKCS#1 or PKCS#8) for rsa-sha256, or the
base64 of the raw 32-byte Ed25519 seed for ed25519-sha256 (what dkimpy's
nacl.signing.SigningKey wants). The signed message (the new DKIM-Signature
field followed by the input, unchanged) is written to stdout. dkimpy's
default header list is signed (the RFC 6376 "SHOULD" list, From twice).
"""

import sys

# dnspython imports its DNS-over-HTTPS/QUIC clients (httpx, requests, ...)
# when they are installed, which triples the start-up time. Plain UDP/TCP
# DNS is all we use, so make those imports fail fast.
for _m in ("httpx", "requests", "h2", "aioquic"):
    sys.modules.setdefault(_m, None)

try:
    import dkim
except ImportError as e:  # pragma: no cover - reported to the Go side
    sys.stderr.write("interop: missing python module: %s\n" % e)
    sys.exit(3)


def main():
    if len(sys.argv) != 7:
        sys.stderr.write(
            "usage: dkimpy_sign.py SELECTOR DOMAIN KEYFILE HEADER_CANON BODY_CANON ALGO < message\n")
        return 2
    selector, domain, keyfile, hcanon, bcanon, algo = sys.argv[1:]
    with open(keyfile, "rb") as f:
        key = f.read().strip()
    msg = sys.stdin.buffer.read()
    try:
        d = dkim.DKIM(msg)
        sig = d.sign(selector.encode(), domain.encode(), key,
                     signature_algorithm=algo.encode(),
                     canonicalize=(hcanon.encode(), bcanon.encode()))
    except dkim.DKIMException as e:
        sys.stderr.write("dkimpy sign: %s: %s\n" % (type(e).__name__, e))
        return 1
    sys.stdout.buffer.write(sig + msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
