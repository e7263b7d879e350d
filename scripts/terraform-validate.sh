#!/usr/bin/env bash
# `terraform validate` of infra/aws (the root and each module), offline: no registry is reachable here, so the
# providers come from a filesystem mirror (TERRAFORM_PLUGIN_MIRROR, /opt/tf-plugins: hashicorp/aws 5.100.0) through
# a CLI config of its own. Everything terraform writes (the CLI config, a copy of the configuration, .terraform/ and
# the lock file) stays in a temporary directory, so the repository is left as it was. Part of `make deploy-check`.
# A missing binary or mirror fails with a message: the check is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
TERRAFORM="${TERRAFORM:-terraform}"
MIRROR="${TERRAFORM_PLUGIN_MIRROR:-/opt/tf-plugins}"

if ! command -v "$TERRAFORM" >/dev/null; then
  echo "terraform-validate: no '$TERRAFORM' binary on PATH (install Terraform >= 1.10, or set TERRAFORM)" >&2
  exit 1
fi
if [ ! -d "$MIRROR/registry.terraform.io/hashicorp/aws" ]; then
  echo "terraform-validate: no hashicorp/aws provider in the mirror $MIRROR (set TERRAFORM_PLUGIN_MIRROR to a" \
    "directory laid out as <host>/<namespace>/<type>/<version>/<os_arch>/, e.g. made by 'terraform providers mirror')" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/gatherly-terraform.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cat >"$work/cli.tfrc" <<CONFIG
provider_installation {
  filesystem_mirror {
    path = "$MIRROR"
  }
}
CONFIG
cp -r infra/aws "$work/aws"
export TF_CLI_CONFIG_FILE="$work/cli.tfrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

echo "== terraform $("$TERRAFORM" version | head -1 | cut -d' ' -f2) validate (providers from $MIRROR)"
for directory in "$work/aws" "$work"/aws/modules/*/; do
  name="${directory#"$work/"}"
  name="${name%/}"
  export TF_DATA_DIR="$work/data/${name//\//-}"
  if ! output="$("$TERRAFORM" -chdir="$directory" init -backend=false -input=false -no-color 2>&1)"; then
    echo "terraform init failed in infra/${name}:" >&2
    echo "$output" >&2
    exit 1
  fi
  printf 'infra/%s: ' "$name"
  "$TERRAFORM" -chdir="$directory" validate -no-color
done
