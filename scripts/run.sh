#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the
# local stack in the foreground until Ctrl-C: corral-store, corral-session,
# the scripted model server (the offline model) and one corral-worker.
# (`corral up` replaces this script when the CLI exists.)
#   CORRAL_DATA_DIR         where state lives (default ./data)
#   CORRAL_WORKSPACE_ROOTS  where sessions may work (default <data>/workspaces)
#   OPENAI_API_KEY/OPENAI_BASE_URL or ANTHROPIC_API_KEY: use a real model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset ci >/dev/null
cmake --build --preset ci -j"$(nproc)" >/dev/null
B=build/ci
export CORRAL_DATA_DIR="${CORRAL_DATA_DIR:-$PWD/data}"
mkdir -p "$CORRAL_DATA_DIR"

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping the stack..." >&2
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM EXIT

# start NAME COMMAND...: run it with its log lines prefixed by [NAME].
start() {
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

start store $B/services/store/corral-store
start session $B/services/session/corral-session
worker_args=()
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${OPENAI_BASE_URL:-}" ]; then
  model="OpenAI-compatible (${OPENAI_BASE_URL:-https://api.openai.com/v1})"
elif [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  model="Anthropic"
else
  start model $B/tests/fakes/corral-fake-model --fake-listen 127.0.0.1:7710 --fake-chunk-delay 30ms
  worker_args=(--openai-base-url http://127.0.0.1:7710/v1)
  model="the built-in scripted model (offline; set OPENAI_API_KEY/OPENAI_BASE_URL or ANTHROPIC_API_KEY to use a real one)"
fi
start worker $B/services/agent-worker/corral-worker "${worker_args[@]}"
start gateway $B/gateway/corral-gateway
sleep 1
# An API key for this local stack: made once, kept (mode 600) in the data
# dir, shown each time.  Only its SHA-256 is in the store.
keyfile="$CORRAL_DATA_DIR/local-api-key"
if [ ! -s "$keyfile" ]; then
  (umask 077; $B/gateway/corral-keys create --tenant local --name "local stack" --admin |
     sed -n 's/^key: //p' >"$keyfile")
fi
key=$(cat "$keyfile")
cat <<MSG

Corral's local stack is running (data in $CORRAL_DATA_DIR).
  gateway  http://127.0.0.1:8080    ACP over WebSocket at ws://127.0.0.1:8080/acp
  API key  $key
           (kept in $keyfile)
  store    tcp://127.0.0.1:7701     session  tcp://127.0.0.1:7702 (clients)
  events   tcp://127.0.0.1:7704     model    $model
Try it from another terminal:
  curl -s -H "Authorization: Bearer $key" http://127.0.0.1:8080/v1/sessions
  /usr/bin/python3 scripts/try.py "hello"
  /usr/bin/python3 scripts/try.py "write a file"      (asks permission)
Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
echo "a service exited on its own; see its log lines above. Stopping the rest." >&2
exit 1
