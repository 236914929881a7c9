"""Verify every DKIM-Signature of a message with dkimpy.

Used by the Go package internal/interop (embedded with go:embed); run it
with Debian's /usr/bin/python3, which has python3-dkim and dnspython.

Usage: python3 dkimpy_verify.py DNS_ADDR [TIMEOUT_SECONDS] < message

DNS_ADDR is "ip:port" or "[ipv6]:port". Keys are looked up there and only
there (no /etc/resolv.conf). The result is a JSON array on stdout with one
object per DKIM-Signature header field, top to bottom:
  {"index": i, "d": ..., "s": ..., "a": ..., "ok": bool, "error": "..."}
"error" explains a failure (exception text plus dkimpy's own log lines).
Exit status 0 means the script ran; it says nothing about the signatures.
Exit status 2 means a usage or environment problem (message on stderr).
"""

import json
import logging
import sys

# dnspython imports its DNS-over-HTTPS/QUIC clients (httpx, requests, ...)
# when they are installed, which triples the start-up time. Plain UDP/TCP
# DNS is all we use, so make those imports fail fast.
for _m in ("httpx", "requests", "h2", "aioquic"):
    sys.modules.setdefault(_m, None)

try:
    import dkim
    import dns.exception
    import dns.rdatatype
    import dns.resolver
except ImportError as e:  # pragma: no cover - reported to the Go side
    sys.stderr.write("interop: missing python module: %s\n" % e)
    sys.exit(3)


def parse_addr(addr):
    if addr.startswith("["):
        host, _, port = addr[1:].partition("]:")
    else:
        host, _, port = addr.rpartition(":")
    if not host or not port:
        raise ValueError("bad DNS address %r, want ip:port" % addr)
    return host, int(port)


def make_dnsfunc(host, port, lifetime):
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [host]
    res.port = port
    res.timeout = lifetime
    res.lifetime = lifetime
    res.cache = None

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        try:
            ans = res.resolve(name, dns.rdatatype.TXT, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoNameservers as e:
            # SERVFAIL or REFUSED: a temporary error, as RFC 6376 says.
            raise dkim.DnsTimeoutError("no usable answer: %s" % e)
        except dns.exception.Timeout as e:
            raise dkim.DnsTimeoutError("timeout: %s" % e)
        if ans.rrset is None:
            return None
        # Like dkimpy's own lookup: the strings of the first TXT record,
        # concatenated (RFC 6376 section 3.6.2.2).
        for rdata in ans.rrset:
            return b"".join(rdata.strings)
        return None

    return dnsfunc


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        msg = record.getMessage()
        # dkimpy logs the signed header text at debug level; keep the
        # reasons, not the content.
        if msg.startswith("sig:") or msg.startswith("bh:"):
            return
        self.lines.append(msg)


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: dkimpy_verify.py DNS_ADDR [TIMEOUT] < message\n")
        return 2
    try:
        host, port = parse_addr(sys.argv[1])
        lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    except ValueError as e:
        sys.stderr.write("%s\n" % e)
        return 2
    msg = sys.stdin.buffer.read()
    dnsfunc = make_dnsfunc(host, port, lifetime)

    count = 0
    try:
        probe = dkim.DKIM(msg)
    except dkim.DKIMException as e:
        sys.stderr.write("dkimpy cannot parse the message: %s: %s\n" % (type(e).__name__, e))
        return 1
    for name, _ in probe.headers:
        if name.lower() == b"dkim-signature":
            count += 1

    results = []
    for i in range(count):
        logger = logging.getLogger("dkimpy_verify.%d" % i)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = Collect()
        logger.addHandler(handler)
        d = dkim.DKIM(msg, logger=logger, timeout=lifetime)
        res = {"index": i, "d": "", "s": "", "a": "", "ok": False, "error": ""}
        err = ""
        try:
            prep = d.verify_headerprep(idx=i)
            if prep:
                sig = prep[0]
                res["d"] = sig.get(b"d", b"").decode("utf-8", "replace")
                res["s"] = sig.get(b"s", b"").decode("utf-8", "replace")
                res["a"] = sig.get(b"a", b"").decode("utf-8", "replace")
            res["ok"] = bool(d.verify(idx=i, dnsfunc=dnsfunc))
        except dkim.DKIMException as e:
            err = "%s: %s" % (type(e).__name__, e)
        except Exception as e:  # a dkimpy bug must not hide other results
            err = "unexpected %s: %s" % (type(e).__name__, e)
        if not res["ok"]:
            reasons = [x for x in [err] + handler.lines if x]
            res["error"] = "; ".join(reasons) or "signature did not verify"
        results.append(res)
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
