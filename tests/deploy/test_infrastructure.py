"""Terraform, the Dockerfile, the dashboard and the CI workflow: parsed and checked for what they promise
(`terraform validate` itself runs in `make deploy-check`, scripts/terraform-validate.sh; checkov's bc-python-hcl2
parses the files here)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from prometheus_client import REGISTRY

import gatherly.kernel.metrics
import gatherly.notifications.sending  # noqa: F401 - registers the notification sends counter

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "infra" / "aws"
MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())


def parse(directory: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for block, items in hcl2.loads(path.read_text()).items():
            merged.setdefault(block, []).extend(items)
    return merged


def value(attribute: Any) -> Any:
    """python-hcl2 gives an attribute as a one-item list."""
    return attribute[0] if isinstance(attribute, list) and len(attribute) == 1 else attribute


def attributes(body: dict[str, Any]) -> set[str]:
    return {key for key in body if not key.startswith("__")}  # not python-hcl2's __start_line__, __end_line__


def variables(directory: Path) -> dict[str, dict[str, Any]]:
    return {name: body for item in parse(directory).get("variable", []) for name, body in item.items()}


@pytest.mark.parametrize("directory", [TERRAFORM, *MODULES], ids=lambda p: p.name)
def test_every_variable_and_output_is_described(directory: Path) -> None:
    assert variables(directory), directory
    for name, body in variables(directory).items():
        assert body.get("description"), f"{directory.name}: variable {name}"
    for item in parse(directory).get("output", []):
        for name, body in item.items():
            assert body.get("description"), f"{directory.name}: output {name}"


def test_root_variables_without_a_safe_default_are_validated() -> None:
    for name, body in variables(TERRAFORM).items():
        if name != "kafka_version":  # MSK checks the version string itself
            assert body.get("validation"), name


def test_module_calls_match_the_modules_variables() -> None:
    """What `terraform validate` would say about the wiring: every argument exists, every required one is given."""
    calls = {name: body for item in parse(TERRAFORM)["module"] for name, body in item.items()}
    assert set(calls) == {"vpc", "eks", "rds", "msk", "s3", "ses", "irsa"}
    for name, call in calls.items():
        module_dir = (TERRAFORM / value(call["source"])).resolve()
        declared = variables(module_dir)
        given = attributes(call) - {"source", "count", "for_each", "depends_on", "providers"}
        assert given <= set(declared), (name, given - set(declared))
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= given, (name, required - given)
        outputs = {o for item in parse(module_dir).get("output", []) for o in item}
        for used in re.findall(
            rf"module\.{name}(?:\[\*\])?\.(\w+)", "".join(p.read_text() for p in TERRAFORM.glob("*.tf"))
        ):
            assert used in outputs, (name, used)


def test_state_is_remote_and_locked() -> None:
    (terraform,) = parse(TERRAFORM)["terraform"]
    (backend,) = terraform["backend"]
    assert value(backend["s3"]["encrypt"]) is True and value(backend["s3"]["use_lockfile"]) is True


def test_abandoned_uploads_expire_and_the_bucket_is_private() -> None:
    resources = {
        (kind, name): body
        for item in parse(TERRAFORM / "modules" / "s3")["resource"]
        for kind, named in item.items()
        for name, body in named.items()
    }
    block = resources[("aws_s3_bucket_public_access_block", "images")]
    assert all(
        value(block[key]) is True
        for key in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    rules = {value(rule["id"]): rule for rule in resources[("aws_s3_bucket_lifecycle_configuration", "images")]["rule"]}
    # The images service writes originals under uploads/ (services/images/.../domain.py original_key).
    assert value(value(rules["abandoned-uploads"]["filter"])["prefix"]) == "uploads/"
    assert value(value(rules["abandoned-uploads"]["expiration"])["days"]) == "${var.upload_expiry_days}"


def test_the_overlay_reads_exactly_what_terraform_outputs() -> None:
    (outputs,) = [item["k8s_infra_env"] for item in parse(TERRAFORM)["output"] if "k8s_infra_env" in item]
    produced = set(re.findall(r"\b([A-Z][A-Z_]+)=", str(outputs["value"])))
    env_file = ROOT / "deploy/k8s/overlays/prod/infra.env"
    present = {line.split("=", 1)[0] for line in env_file.read_text().splitlines() if line}
    assert produced == present
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/overlays/prod/kustomization.yaml").read_text())
    used = {r["source"]["fieldPath"].removeprefix("data.") for r in kustomization["replacements"]}
    assert used == present


def test_the_image_runs_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    names = [stage.split("\n", 1)[0].rsplit(" AS ", 1)[-1] for stage in stages]
    assert names[-1] == "gatherly"  # a plain `docker build` makes the services' image
    for stage in (stages[names.index("gatherly")], stages[names.index("web")]):
        (user,) = re.findall(r"^USER (\d+):(\d+)$", stage, flags=re.MULTILINE)
        assert int(user[0]) >= 10000
    assert 'ENTRYPOINT ["gatherly"]' in stages[-1]
    assert "uv sync --frozen --no-dev" in text


def test_the_dashboard_shows_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/gatherly.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for e in expressions for name in re.findall(r"\bgatherly_\w+", e)}
    exported = {metric.name for metric in REGISTRY.collect()}
    exported |= {name + "_total" for name in exported}
    assert used, "no metric in the dashboard"
    assert used <= exported, used - exported
    for metric in (
        "gatherly_consumer_lag",
        "gatherly_dlq_records",
        "gatherly_outbox_oldest_age_seconds",
        "gatherly_http_request_seconds",
    ):
        assert metric in used


def test_ci_runs_the_same_steps_as_ci_run() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    steps = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in steps
    assert "bash scripts/deploy-tools.sh" in (ROOT / ".ci/run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    (test_target,) = re.findall(r"^test: (.*?) ##", makefile, flags=re.MULTILINE)
    assert "deploy-check" in test_target.split()
    deploy = " ".join(step.get("run", "") for step in workflow["jobs"]["deploy-dev"]["steps"])
    assert "scripts/deploy-set-image.sh dev" in deploy


def terraform_validate(**env: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / "scripts" / "terraform-validate.sh"
    return subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)


def test_terraform_validate_fails_loudly_without_terraform() -> None:
    result = terraform_validate(TERRAFORM="no-such-terraform")
    assert result.returncode == 1
    assert "no 'no-such-terraform' binary on PATH" in result.stderr


def test_terraform_validate_fails_loudly_without_the_provider_mirror(tmp_path: Path) -> None:
    result = terraform_validate(TERRAFORM="bash", TERRAFORM_PLUGIN_MIRROR=str(tmp_path))  # any binary that exists
    assert result.returncode == 1
    assert f"no hashicorp/aws provider in the mirror {tmp_path}" in result.stderr


def test_terraform_needs_only_the_providers_the_mirror_has() -> None:
    """The offline mirror holds hashicorp/aws 5.100.0 and nothing else: no tls provider, and 5.100 admitted."""
    (terraform,) = parse(TERRAFORM)["terraform"]
    (providers,) = terraform["required_providers"]
    assert set(providers) == {"aws"}
    assert value(providers["aws"])["version"] == ">= 5.100, < 7.0"
    used = {
        m
        for directory in (TERRAFORM, *MODULES)
        for p in directory.glob("*.tf")
        for m in re.findall(r'^(?:data|resource) "(\w+?)_', p.read_text(), flags=re.MULTILINE)
    }
    assert used == {"aws"}
