#!/usr/bin/env bash
# The deployment checks' binaries (`make deploy-check`): kustomize (renders deploy/k8s overlays), kubeconform
# (validates the rendered manifests against Kubernetes and the vendored CRD schemas) and actionlint (checks
# .github/workflows). Each is built from the Go module proxy into ~/.local/bin when missing or at another version
# (Debian's Go when there is none). Safe to run again; the first build takes a few minutes on two cores.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Pinned versions: bump them here (the checks print the version they ran with).
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"  # v5.8.x needs a kube-openapi version the proxy does not serve
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
BIN_DIR="${GATHERLY_TOOLS_BIN:-$HOME/.local/bin}"

GO="$(command -v go || true)"
[ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go

# build NAME PACKAGE VERSION: go install PACKAGE@VERSION unless BIN_DIR/NAME already is that version.
build() {
  local name="$1" package="$2" version="$3" stamp="$BIN_DIR/.$1.version"
  if [ -x "$BIN_DIR/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return
  fi
  if [ -z "$GO" ]; then
    echo "== installing Go"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq golang-go >/dev/null
    GO="$(command -v go)"
  fi
  echo "== building $name $version"
  mkdir -p "$BIN_DIR"
  GOBIN="$BIN_DIR" GOTOOLCHAIN=auto GOFLAGS=-modcacherw CGO_ENABLED=0 "$GO" install "$package@$version"
  echo "$version" >"$stamp"
}

build kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
build actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"
build kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
