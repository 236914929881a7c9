#!/usr/bin/python3
"""Regenerates the ARC golden chains with dkimpy's arc_sign (Debian
python3-dkim): ./gen.py in this folder. Keys are made once with openssl and
kept; chains are sealed with a fixed timestamp so reruns only change b=."""
import base64, os, subprocess, sys
for m in ("httpx", "requests", "h2", "aioquic"):
    sys.modules.setdefault(m, None)
import dkim

HOPS = ["fwd.example", "lists.example", "relay.example"]
SEL = "arc1"
TS = 1764979200

def key(domain):
    path = domain + ".pem"
    if not os.path.exists(path):
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", path, "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", path, "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
    return open(path, "rb").read(), base64.b64encode(der).decode()

BASE = (b"From: Alice <alice@example.org>\r\n"
        b"To: list@lists.example\r\n"
        b"Subject: ARC test\r\n"
        b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <arc-test@example.org>\r\n"
        b"\r\n"
        b"Hello through the intermediaries.\r\n")

def seal(msg, k, arc_result, sel=SEL):
    domain = HOPS[k]
    priv, _ = key(domain)
    ar = "Authentication-Results: %s; spf=pass smtp.mailfrom=example.org;\r\n\tdkim=pass header.d=example.org;\r\n\tdmarc=pass header.from=example.org" % domain
    if arc_result:
        ar += ";\r\n\tarc=%s" % arc_result
    ar += ";\r\n\tiprev=pass smtp.remote-ip=192.0.2.%d\r\n" % (k + 1)
    msg = ar.encode() + msg
    fields = dkim.arc_sign(msg, sel.encode(), domain.encode(), priv, domain.encode(), timestamp=TS)
    if not fields:
        raise SystemExit("arc_sign returned nothing at hop %d" % k)
    return b"".join(fields) + msg

def chain(n, last_result="pass", broken=-1, footer_at=-1):
    msg = BASE
    for k in range(n):
        if k == footer_at:
            msg += b"-- \r\nlist footer\r\n"
        res = None if k == 0 else (last_result if k == n - 1 else "pass")
        # A broken instance signs with a selector whose record holds
        # another domain's key: its seal and AMS never verify.
        msg = seal(msg, k, res, "wrong" if k == broken else SEL)
    return msg

def write(name, msg):
    with open(name, "wb") as f:
        f.write(msg)

with open("keys.zone", "w") as z:
    for d in HOPS:
        _, pub = key(d)
        parts = " ".join('"%s"' % pub[i:i + 200] for i in range(0, len(pub), 200))
        z.write('%s._domainkey.%s. 300 IN TXT "v=DKIM1; k=rsa; p=" %s\n' % (SEL, d, parts))
    _, other = key(HOPS[0])
    z.write('wrong._domainkey.%s. 300 IN TXT "v=DKIM1; k=rsa; p=" %s\n' % (HOPS[1], " ".join('"%s"' % other[i:i + 200] for i in range(0, len(other), 200))))
for n in (1, 2, 3):
    write("chain%d.eml" % n, chain(n))
write("cvfail.eml", chain(3, last_result="fail"))
write("brokenmiddle.eml", chain(3, broken=1))
# The third hop changed the body before sealing: the chain passes, but
# only the AMS of i=3 still verifies (oldest-pass 3).
write("footer.eml", chain(3, footer_at=2))
