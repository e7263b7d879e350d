#!/usr/bin/env bash
# SeaweedFS, the S3-compatible server the storage tests run against (GATHERLY_TEST_STORAGE_BACKENDS=...,s3): built
# from the Go module proxy into ~/.local/bin/weed when missing (Debian's Go when there is none; GOTOOLCHAIN=auto
# fetches the newer toolchain SeaweedFS asks for, also from the proxy). The tests start it themselves, on free ports
# (services/images/tests/conftest.py). Safe to run again. The build takes minutes on two cores.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Pinned: the proxy's pseudo-version of SeaweedFS's main module at a known commit.
VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
BIN="${GATHERLY_TEST_WEED:-$HOME/.local/bin/weed}"

if [ -x "$BIN" ]; then
  "$BIN" version 2>/dev/null | head -1 || true
  exit 0
fi

GO="$(command -v go || true)"
[ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
if [ -z "$GO" ]; then
  echo "== installing Go"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq golang-go >/dev/null
  GO="$(command -v go)"
fi

echo "== building SeaweedFS $VERSION (minutes)"
export GOTOOLCHAIN=auto GOFLAGS=-modcacherw
source_dir="$("$GO" mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
mkdir -p "$(dirname "$BIN")"
# The main module's own go.mod (with its replace directives) applies only when building inside it.
(cd "$source_dir" && "$GO" build -o "$BIN" ./weed)
"$BIN" version | head -1
