#!/bin/sh
# Install what authmilter's end-to-end tests (test/e2e) need on Debian 12,
# non-interactively. Run as root. Safe to run again.
#
#   postfix            the MTA under test (a private instance; the system
#                      instance is neither configured nor started here)
#   dovecot-core       SASL server for Postfix's SMTP AUTH case
#   libsasl2-modules, sasl2-bin
#                      Cyrus SASL's PLAIN/LOGIN mechanisms and sasldb
#                      plugin, and saslpasswd2, for Sendmail's SMTP AUTH
#                      case
#   opendkim           OpenDKIM, a DKIM verifier our signatures must pass
#   opendkim-tools     OpenDKIM's tools (the interop helpers' peers)
#   miltertest         OpenDKIM's milter protocol driver (Lua)
#   python3-dkim, python3-dnspython, python3-nacl
#                      dkimpy: a second verifier, and the signer of
#                      "outside" mail (Ed25519 needs nacl)
#   swaks              handy for poking the instance by hand (the tests
#                      speak SMTP themselves)
#   m4                 builds Sendmail's .cf from the .mc
#   util-linux, mount, hostname, bsdutils (script)
#                      namespaces for Sendmail; postfix check on a tty
#   libdb5.3 ... libwrap0
#                      the libraries the unpacked sendmail binary links
#
# Sendmail: sendmail-bin conflicts with postfix, so its packages are
# downloaded and unpacked (dpkg-deb -x) into $SENDMAIL_ROOT instead of
# being installed; the tests run the binary from there with their own
# configuration.
set -eu

SENDMAIL_ROOT=${AUTHMILTER_E2E_SENDMAIL:-/opt/authmilter-e2e/sendmail}
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: run as root" >&2
	exit 1
fi

# Postfix asks what kind of mail server this is; say none, so that its
# package leaves /etc/postfix/main.cf unconfigured and does not matter.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

apt-get update -q
apt-get install -y -q --no-install-recommends \
	postfix dovecot-core libsasl2-modules sasl2-bin \
	opendkim opendkim-tools miltertest \
	python3 python3-dkim python3-dnspython python3-nacl \
	swaks m4 util-linux mount hostname bsdutils ca-certificates \
	libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libssl3 libwrap0

# The packages' own daemons are not needed (the tests start private
# instances); leave them as the package left them.

if [ ! -x "$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" ] ||
	[ ! -f "$SENDMAIL_ROOT/usr/share/sendmail/cf/m4/cf.m4" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# apt-get download writes to the current directory as the _apt user
	# when it can; a private directory it may write to avoids the warning.
	chmod 0755 "$tmp"
	chown _apt "$tmp" 2>/dev/null || true
	(cd "$tmp" && apt-get download -q sendmail-bin sendmail-base sendmail-cf)
	mkdir -p "$SENDMAIL_ROOT"
	for deb in "$tmp"/*.deb; do
		dpkg-deb -x "$deb" "$SENDMAIL_ROOT"
	done
fi
"$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" -d0.1 -bt </dev/null 2>&1 | head -1 || true
echo "install-deps.sh: done (Sendmail unpacked in $SENDMAIL_ROOT)"
