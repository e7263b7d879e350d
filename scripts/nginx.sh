#!/usr/bin/env bash
# nginx from Debian: the gateway of the distributed stack (`gatherly stack up` writes its config and runs it in the
# foreground; the Debian service itself is left stopped). Safe to run again.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "== installing nginx"
  as_root apt-get update -qq
  # policy-rc.d-free: the package would start a default server on port 80; stop it again if it did.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nginx-light >/dev/null
  as_root service nginx stop >/dev/null 2>&1 || true
fi
echo "nginx ready: $(/usr/sbin/nginx -v 2>&1)"
