#!/usr/bin/env bash
# Run every unit test binary of a build under valgrind memcheck; fail on
# any error or definite leak.  usage: scripts/memcheck.sh [build dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/ci}
mapfile -t tests < <(ctest --test-dir "$build" -N -L unit | sed -n 's/^ *Test *#[0-9]*: //p')
fail=0
for t in "${tests[@]}"; do
  bin=$(find "$build/tests/unit" -type f -name "$t" -perm -u+x | head -n 1)
  [ -n "$bin" ] || continue   # not a binary (e.g. the docs check)
  start=$(date +%s)
  if valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
       --show-leak-kinds=definite "$bin" >"/tmp/memcheck-$t.log" 2>&1; then
    echo "memcheck: $t clean ($(( $(date +%s) - start )) s)"
  else
    echo "memcheck: $t FAILED:" >&2; tail -n 40 "/tmp/memcheck-$t.log" >&2; fail=1
  fi
done
exit $fail
