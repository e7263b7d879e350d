#!/usr/bin/env bash
# `make deploy-check`: the deployment files checked without a cluster or a cloud (part of `make test`).
#  1. kustomize renders both overlays and Argo CD's manifests into .cache/deploy/;
#  2. kubeconform validates every rendered resource, strictly (unknown fields fail), against the Kubernetes 1.37
#     schemas (from the kubernetes-validate package) and the vendored CRD schemas (deploy/k8s/schemas/);
#  3. hadolint checks the Dockerfile, actionlint the workflows;
#  4. checkov checks the rendered manifests, the Terraform and the Dockerfile (skips and reasons: .checkov.yaml);
#  5. terraform validate checks infra/aws and each of its modules, offline (scripts/terraform-validate.sh).
# tests/deploy/ then checks Gatherly's own promises on the same rendered output.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
UV="${UV:-uv}"
KUBERNETES_VERSION=1.37.0

bash scripts/deploy-tools.sh
out=.cache/deploy
rm -rf "$out/rendered"
mkdir -p "$out/rendered"

echo "== kustomize $(kustomize version)"
for overlay in dev prod; do
  kustomize build "deploy/k8s/overlays/$overlay" >"$out/rendered/$overlay.yaml"
done
kustomize build deploy/argocd >"$out/rendered/argocd.yaml"

echo "== kubeconform $(kubeconform -v) (Kubernetes $KUBERNETES_VERSION, strict)"
if [ ! -d "$out/kubernetes-$KUBERNETES_VERSION" ]; then
  "$UV" run python scripts/kube_schemas.py builtin "$out/kubernetes-$KUBERNETES_VERSION.tmp" "$KUBERNETES_VERSION"
  mv "$out/kubernetes-$KUBERNETES_VERSION.tmp" "$out/kubernetes-$KUBERNETES_VERSION"
fi
kubeconform -strict -summary \
  -schema-location "$out/kubernetes-$KUBERNETES_VERSION/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
  -schema-location "deploy/k8s/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
  "$out"/rendered/*.yaml

echo "== hadolint"
"$UV" run hadolint Dockerfile
echo "== actionlint $(actionlint -version | head -1)"
actionlint

echo "== checkov"
"$UV" run checkov --config-file .checkov.yaml --quiet -d "$out/rendered" -d infra/aws --framework kubernetes terraform
"$UV" run checkov --config-file .checkov.yaml --quiet -f Dockerfile --framework dockerfile

bash scripts/terraform-validate.sh
