#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (idempotent; Playwright drives it, never downloads a browser).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then  # already there: nothing to do
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
