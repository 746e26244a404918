#!/usr/bin/env bash
# Install every Debian package Corral needs to build, test and run.
# Idempotent: packages already present are skipped, so a warm machine pays
# one dpkg query. Works as root or through sudo.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git ca-certificates
  clang clang-format libclang-rt-14-dev
  libzmq3-dev libczmq-dev libmsgpack-dev libcurl4-openssl-dev liblmdb-dev
  lmdb-utils libcmocka-dev libwebsockets-dev libwebsockets-evlib-ev libev-dev
  libjansson-dev libssl-dev
  curl python3 python3-zmq python3-msgpack python3-websockets python3-yaml prometheus
  valgrind procps tmux
  chromium firefox-esr
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js and npm run the official ACP SDK tests and the fan-out
# benchmark's load generator; Debian's packages unless a Node.js is there.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

npm_deps() {
  # The SDK, ws and playwright-core (which drives Debian's chromium and
  # firefox-esr for the web page's tests), pinned by
  # tests/e2e/package-lock.json; skipped when
  # node_modules was installed from this very lock file (a stamp keeps its
  # checksum).
  local e2e sum
  e2e="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e"
  [ -f "$e2e/package-lock.json" ] || return 0
  sum=$(sha256sum "$e2e/package-lock.json" | cut -d' ' -f1)
  [ "$(cat "$e2e/node_modules/.corral-lock" 2>/dev/null)" = "$sum" ] && return 0
  echo "setup: npm ci in tests/e2e" >&2
  (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$sum" >"$e2e/node_modules/.corral-lock"
}

if [ ${#missing[@]} -eq 0 ]; then
  npm_deps
  exit 0
fi

as_root=(env DEBIAN_FRONTEND=noninteractive)
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo DEBIAN_FRONTEND=noninteractive)
fi
echo "setup: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_deps
echo "setup: done" >&2
