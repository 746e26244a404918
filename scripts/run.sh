#!/usr/bin/env bash
# The README's first command: install what is missing, build, then run the
# whole local stack in the foreground with `corral up` until Ctrl-C
# (corral-store, corral-session, corral-monitor, corral-worker,
# corral-gateway on 127.0.0.1:8080, and the scripted model server when no
# model provider is configured).  Arguments go to `corral up`
# (`bash scripts/run.sh --help` lists them); docs/cli.md has the rest.
#   CORRAL_DATA_DIR         where state lives (default ./data)
#   CORRAL_API_KEY          install this admin key instead of making one
#   CORRAL_LISTEN           the gateway's address (default 127.0.0.1:8080)
#   CORRAL_WORKSPACE_ROOTS  where sessions may work (default <data>/workspaces)
#   OPENAI_API_KEY/OPENAI_BASE_URL or ANTHROPIC_API_KEY: use a real model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "run: building (cmake --preset ci) ..." >&2
cmake --preset ci >/dev/null
if ! cmake --build --preset ci -j"$(nproc)" >build/run.log 2>&1; then
  tail -40 build/run.log >&2
  echo "run: the build failed; the whole log is in build/run.log" >&2
  exit 1
fi
rm -f build/run.log
exec build/ci/cli/corral up "$@"
