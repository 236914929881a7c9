#!/usr/bin/env bash
# Load benchmark of the built-in key DNS server ([keydns]): installs
# Debian's dnsperf if it is missing (needs root once), then runs
# bench/keydns (see its doc comment) and prints the results as Markdown
# for bench/RESULTS.md. Arguments go to bench/keydns, e.g.
#
#   bench/keydns.sh                  # 100,000 domains, 20 s per run
#   bench/keydns.sh -domains 10000 -d 5s
#
# The first run at a size writes the key table into the temporary folder
# (about a minute for 100,000 domains); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
if ! command -v dnsperf >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench-keydns: dnsperf is missing; run as root once, or: sudo apt-get install dnsperf" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dnsperf >&2
fi
exec "$GO" run ./bench/keydns "$@"
