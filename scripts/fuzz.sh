#!/usr/bin/env bash
# Runs every fuzz target of the module, one after another, for FUZZTIME each
# (default 60s), and prints a summary: target, time, execs, result.
#
#   scripts/fuzz.sh                  # all targets, 60s each
#   FUZZTIME=30s scripts/fuzz.sh     # shorter
#   scripts/fuzz.sh FuzzSession      # only targets whose name matches
#
# go test -fuzz runs one target per invocation and per package, so each
# target is its own `go test` run. FUZZPARALLEL (default 1) is the number of
# fuzzing workers; FUZZTIME is wall-clock time, so with one worker it is
# about that much CPU time. A crasher is written by Go to
# <package>/testdata/fuzz/<Target>/<hash>; keep it there (it becomes a
# regression test) once the bug is fixed. Exits non-zero if any target
# failed.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZPARALLEL=${FUZZPARALLEL:-1}
filter=${1:-.}
logdir=$(mktemp -d "${TMPDIR:-/tmp}/authmilter-fuzz.XXXXXX")

# "path/to/pkg FuzzName" for every fuzz target in a _test.go file.
targets=$(git ls-files '*_test.go' | xargs grep -H '^func Fuzz[A-Za-z0-9_]*(f \*testing.F)' |
  sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#./\1 \2#; s#^[^ ]+_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#. \1#' |
  sort -u | grep -E " .*${filter}")
if [ -z "$targets" ]; then
  echo "fuzz: no target matches $filter" >&2
  exit 1
fi

failed=0
summary=()
while read -r pkg name; do
  pkgname=${pkg#./}
  log="$logdir/${pkgname//\//_}_$name.log"
  echo "fuzz: $pkg $name for $FUZZTIME (log: $log)"
  start=$(date +%s)
  "$GO" test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -parallel="$FUZZPARALLEL" "$pkg" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  # The last progress line: "fuzz: elapsed: 60s, execs: 123456 (2057/sec), ..."
  execs=$(grep -Eo 'execs: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  result=ok
  if [ $rc -ne 0 ]; then
    failed=1
    crasher=$(grep -Eo 'testdata/fuzz/[^ ]+' "$log" | tail -1)
    if [ -n "$crasher" ]; then
      result="CRASH $pkg/$crasher"
    else
      result="FAIL (see $log)"
    fi
    tail -30 "$log"
  fi
  summary+=("$(printf '%-28s %-20s %6ss %12s  %s' "$pkg" "$name" "$secs" "${execs:-0}" "$result")")
done <<<"$targets"

echo
echo "fuzz summary ($(date -u +%Y-%m-%d), FUZZTIME=$FUZZTIME, parallel=$FUZZPARALLEL, $("$GO" version | awk '{print $3}'))"
printf '%-28s %-20s %7s %12s  %s\n' package target wall execs result
printf '%s\n' "${summary[@]}"
exit $failed
