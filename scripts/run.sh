#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the
# local stack in the foreground until Ctrl-C.  For now the stack is
# corral-store; later issues make `corral up` start every service.
#   CORRAL_DATA_DIR        where state lives (default ./data)
#   CORRAL_STORE_ENDPOINT  where the store listens (default tcp://127.0.0.1:7701)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset ci >/dev/null
cmake --build --preset ci -j"$(nproc)" >/dev/null
export CORRAL_DATA_DIR="${CORRAL_DATA_DIR:-$PWD/data}"
export CORRAL_STORE_ENDPOINT="${CORRAL_STORE_ENDPOINT:-tcp://127.0.0.1:7701}"
cat <<MSG
corral-store starts now.
  listening on  $CORRAL_STORE_ENDPOINT   (ZeroMQ ROUTER, bus protocol: docs/bus-protocol.md)
  data in       $CORRAL_DATA_DIR/store
  stop with     Ctrl-C (graceful)
MSG
exec build/ci/services/store/corral-store
