#!/usr/bin/env bash
# Installs everything the test suite needs on Debian 12, non-interactively
# (run as root; safe to run again):
#  - test/e2e/install-deps.sh: Postfix, Dovecot (SASL), OpenDKIM and its tools,
#    dkimpy, swaks, m4, and an unpacked Sendmail (it conflicts with postfix);
#  - the packages below, for the key publication tests (RFC 2136 updates to
#    a real authoritative server; the DNS world of internal/dnstopo and
#    test/esp: Knot DNS servers and an unbound recursive resolver), and
#    systemd's tools and passwd (useradd) for the tests of contrib/
#    (test/contrib), PostgreSQL (the reports store a fleet shares) and
#    xmllint (DMARC reports are validated against the RFC 9990 schema);
#  - libssl-dev, pkg-config and gcc: the build signs RSA with OpenSSL's
#    libcrypto through cgo (the binary then needs libssl3 at run time);
#  - python3-authres: dkimpy's ARC signer (the ARC interop tests) needs it;
#  - chromium and fonts-dejavu-core: test/web loads the status pages in
#    headless Chromium (through chromedp), with a font for the screenshots
#    and the contrast check.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

extra=(knot knot-dnsutils unbound procps iproute2 systemd passwd postgresql libxml2-utils
       libssl-dev pkg-config gcc libc6-dev python3-authres chromium fonts-dejavu-core)

have_all() {
  for p in postfix dovecot-core opendkim opendkim-tools miltertest python3-dkim python3-dnspython \
           python3-nacl swaks m4 libsasl2-modules sasl2-bin "${extra[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
  [ -x "${AUTHMILTER_E2E_SENDMAIL:-/opt/authmilter-e2e/sendmail}/usr/libexec/sendmail/sendmail" ]
}

if have_all; then
  echo "install-deps: everything is installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages; run as root: sudo $0" >&2
  exit 1
fi
# The packages' own daemons (postfix, dovecot, opendkim, knot, unbound) are not
# wanted: the tests start private instances on their own ports, and a
# system knotd or opendkim could hold a port they need. Keep the package
# scripts from starting them, unless the machine already has a policy.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
sh test/e2e/install-deps.sh
apt-get install -y -q --no-install-recommends "${extra[@]}"
echo "install-deps: ok"
