#!/usr/bin/env bash
# Deploy = point an overlay at a commit's images and push that change; Argo CD syncs the environment from git.
#   bash scripts/deploy-set-image.sh dev|prod <commit-sha>
# Roll back: run it again with the previous good commit (docs/deploy.md). Needs push rights to the branch (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

env="${1:?usage: deploy-set-image.sh dev|prod <commit-sha>}"
sha="${2:?usage: deploy-set-image.sh dev|prod <commit-sha>}"
[[ "$env" =~ ^(dev|prod)$ ]] || { echo "environment must be dev or prod, not $env" >&2; exit 2; }
[[ "$sha" =~ ^[0-9a-f]{40}$ ]] || { echo "give the full 40-character commit SHA, not $sha" >&2; exit 2; }
owner="${IMAGE_OWNER:-${GITHUB_REPOSITORY_OWNER:-gatherly}}"

bash scripts/deploy-tools.sh
export PATH="$HOME/.local/bin:$PATH"
(
  cd "deploy/k8s/overlays/$env"
  kustomize edit set image "gatherly=ghcr.io/$owner/gatherly:$sha" "gatherly-web=ghcr.io/$owner/gatherly-web:$sha"
)
git add "deploy/k8s/overlays/$env/kustomization.yaml"
if git diff --cached --quiet; then
  echo "$env already runs $sha"
  exit 0
fi
git -c user.name="gatherly-ci" -c user.email="ci@gatherly.invalid" commit -q -m "Deploy $sha to $env"
git push origin HEAD:main
echo "$env now points at $sha; Argo CD rolls it out"
