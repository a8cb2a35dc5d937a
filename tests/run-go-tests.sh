#!/usr/bin/env bash
# Runs go test verbosely into a log, shows each package's result and every
# failure, and ends with one line: "N passed, N failed, N skipped".
set -uo pipefail
log=$(mktemp /tmp/meshless-test.XXXXXX.log)
go test -v "$@" >"$log" 2>&1
rc=$?
grep -E '^(ok|FAIL|---|panic:|\?)' "$log" | grep -vE '^--- (PASS|SKIP)' || true
if [ $rc -ne 0 ]; then
  echo "== output of failing tests (full log: $log) =="
  awk '/^=== RUN/{buf=""} {buf=buf $0 "\n"} /^\s*--- FAIL/{printf "%s", buf; buf=""}' "$log" | tail -n 400
fi
pass=$(grep -cE '^\s*--- PASS' "$log")
fail=$(grep -cE '^\s*--- FAIL' "$log")
skip=$(grep -cE '^\s*--- SKIP' "$log")
if [ $rc -ne 0 ] && [ "$fail" -eq 0 ]; then
  fail=1 # a build failure or panic outside a test still fails the run
fi
echo "${pass} passed, ${fail} failed, ${skip} skipped"
exit $rc
