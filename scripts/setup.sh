#!/usr/bin/env bash
# Install every Debian package Corral needs to build, test and run.
# Idempotent: packages already present are skipped, so a warm machine pays
# one dpkg query. Works as root or through sudo.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git ca-certificates
  clang clang-format libclang-rt-14-dev
  libzmq3-dev libczmq-dev libmsgpack-dev libcurl4-openssl-dev liblmdb-dev
  lmdb-utils libcmocka-dev libwebsockets-dev libjansson-dev libssl-dev
  curl python3 python3-zmq python3-msgpack python3-websockets
  valgrind procps
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

as_root=(env DEBIAN_FRONTEND=noninteractive)
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo DEBIAN_FRONTEND=noninteractive)
fi
echo "setup: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
