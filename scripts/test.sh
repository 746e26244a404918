#!/usr/bin/env bash
# The README's test command: install what is missing, build with warnings
# as errors, run every test (unit + integration).  .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset ci >/dev/null
cmake --build --preset ci -j"$(nproc)"
ctest --preset ci
