#!/usr/bin/env bash
# Node.js and npm for building the web app (web/): Debian's when missing; vite needs Node 20.19 or newer.
set -euo pipefail
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
version="$(node --version)"
major="${version#v}"
major="${major%%.*}"
if [ "$major" -lt 20 ]; then
  echo "Node $version is too old for the web app's build (vite needs 20.19+): install Node 20 or newer" >&2
  exit 1
fi
echo "node $version, npm $(npm --version)"
