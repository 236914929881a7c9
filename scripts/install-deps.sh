#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12, non-interactively.
# Idempotent: packages already present are not downloaded again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(
  opendkim opendkim-tools      # interop peer: verifies our signatures, signs for us
  python3-dkim python3-dnspython  # interop peer: dkimpy
  postfix swaks                # end-to-end: a real MTA and an SMTP client
  dovecot-core                 # end-to-end: SASL for the SMTP AUTH case
  knot knot-dnsutils           # key publication: RFC 2136 updates to a real server
  m4 procps iproute2 ca-certificates
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  # Keep the postfix package from asking questions or touching a system setup.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's packages start their daemons where an init system runs; the tests
# start private instances and need the ports, so stop system ones we started.
for svc in opendkim postfix dovecot knot; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
echo "install-deps: ok"
