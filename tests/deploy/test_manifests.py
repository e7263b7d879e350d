"""The Kubernetes manifests keep Gatherly's promises: checked on `kustomize build` of each overlay (the binary from
scripts/deploy-tools.sh; missing is a failure, never a skip)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatherly.app.gateway import PREFIXES
from gatherly.app.services import ALL
from gatherly.kernel.messages import HEADER_FIELDS
from gatherly.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
Manifest = dict[str, Any]


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path.home() / ".local" / "bin"))
    if not found:
        pytest.fail(f"{name} is missing: run `bash scripts/deploy-tools.sh` (.ci/run does)")
    return found


def kustomize_build(path: Path) -> list[Manifest]:
    output = subprocess.run(
        [tool("kustomize"), "build", str(path)], check=True, capture_output=True, text=True, env={**os.environ}
    ).stdout
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    return {overlay: kustomize_build(ROOT / "deploy" / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def kubeconform() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Validates YAML text like `make deploy-check` does (the same schema locations)."""
    schemas = ROOT / ".cache" / "deploy" / "kubernetes-1.37.0"
    if not schemas.is_dir():
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "kube_schemas.py"), "builtin", str(schemas), "1.37.0"], check=True
        )

    def validate(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                tool("kubeconform"),
                "-strict",
                "-schema-location",
                str(schemas / "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
                "-schema-location",
                str(ROOT / "deploy/k8s/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
                "-",
            ],
            input=text,
            capture_output=True,
            text=True,
        )

    return validate


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


SERVICES = tuple(ALL)
# app/server.py gives uvicorn this long to finish requests in flight after the drain.
UVICORN_GRACEFUL = int(
    re.search(r"timeout_graceful_shutdown=(\d+)", (ROOT / "app/src/gatherly/app/server.py").read_text())[1]
)  # type: ignore[index]

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def gatherly_deployments(manifests: list[Manifest]) -> list[Manifest]:
    return [
        d
        for d in of_kind(manifests, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "gatherly"
    ]


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{m['kind']} {m['metadata']['name']}", m["spec"]["template"]["spec"])
        for m in manifests
        if m["kind"] in ("Deployment", "Job")
    ]


def config(manifests: list[Manifest]) -> dict[str, str]:
    (found,) = [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].startswith("gatherly-config-")]
    return found["data"]


def wave(manifest: Manifest) -> int:
    return int(manifest["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()) and all(
        (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In") for e in selector.get("matchExpressions", [])
    )


@overlays
def test_each_service_runs_its_own_process(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    for service in SERVICES:
        deployment = named(rendered[overlay], "Deployment", f"gatherly-{service}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["run", service]
        assert container["ports"] == [{"name": "http", "containerPort": 8000}]


@overlays
def test_rollouts_never_take_a_ready_pod_first(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    deployments = gatherly_deployments(rendered[overlay])
    assert len(deployments) == len(SERVICES) + 1  # and the web app
    for deployment in deployments:
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }, deployment["metadata"]["name"]


@overlays
def test_probes_and_a_grace_period_longer_than_the_drain(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    drain = float(config(rendered[overlay])["GATHERLY_SHUTDOWN_DRAIN_SECONDS"])
    for deployment in gatherly_deployments(rendered[overlay]):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (deployment["metadata"]["name"], probe)
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        if deployment["metadata"]["name"] != "gatherly-web":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + UVICORN_GRACEFUL
        else:
            assert pod["terminationGracePeriodSeconds"] > pre_stop


@overlays
def test_every_container_is_bounded_and_locked_down(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    for name, pod in pod_specs(rendered[overlay]):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] >= 10000, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (name, bound)
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name


@overlays
def test_each_deployment_has_a_disruption_budget_and_an_autoscaler(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    for deployment in gatherly_deployments(manifests):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [p for p in of_kind(manifests, "PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
        assert [b["spec"]["minAvailable"] for b in budgets] == [1], name
        # A service's selector picks its own pods only.
        others = [d for d in gatherly_deployments(manifests) if d is not deployment]
        assert not any(
            selects(deployment["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in others
        )
        (autoscaler,) = [
            h for h in of_kind(manifests, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        assert autoscaler["spec"]["minReplicas"] >= 2, name


@overlays
def test_each_service_migrates_before_its_deployment(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    for service in SERVICES:
        job = named(rendered[overlay], "Job", f"gatherly-migrate-{service}")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["migrate", service]
        assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
        deployment = named(rendered[overlay], "Deployment", f"gatherly-{service}")
        assert wave(job) < wave(deployment)
        # Same image, settings and database as the service it migrates.
        assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert container["env"] == deployment["spec"]["template"]["spec"]["containers"][0]["env"][:1]


@overlays
def test_network_policies_deny_by_default_and_open_only_what_is_needed(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    policies = of_kind(rendered[overlay], "NetworkPolicy")
    deny = named(rendered[overlay], "NetworkPolicy", "gatherly-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for deployment in gatherly_deployments(rendered[overlay]):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deny["spec"]["podSelector"], labels)
    for service in SERVICES:
        own = named(rendered[overlay], "NetworkPolicy", f"gatherly-{service}")
        sources = [peer for rule in own["spec"]["ingress"] for peer in rule["from"]]
        assert sources == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        ]
    # Services and migration Jobs reach the database on 5432, in the cluster (dev) or the VPC (prod).
    for component in ("service", "migration"):
        labels = {"app.kubernetes.io/part-of": "gatherly", "app.kubernetes.io/component": component}
        ports = {
            port["port"]
            for policy in policies
            if selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("egress", [])
            for port in rule.get("ports", [])
        }
        assert 5432 in ports, component


@overlays
def test_every_service_sends_its_spans_to_the_collector_which_the_network_lets_it_reach(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    collector = named(manifests, "Deployment", "gatherly-otel-collector")
    pod_labels = collector["spec"]["template"]["metadata"]["labels"]
    service = named(manifests, "Service", "gatherly-otel-collector")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    # The pipeline: an OTLP receiver on the port the Service exposes, and the overlay's exporter.
    (config_map,) = [
        m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].startswith("gatherly-otel-collector-")
    ]
    assert collector["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    pipeline = yaml.safe_load(config_map["data"]["config.yaml"])
    assert pipeline["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"0.0.0.0:{ports['otlp-http']}"
    traces = pipeline["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert traces["exporters"] == [{"dev": "debug", "prod": "otlphttp"}[overlay]]
    assert set(traces["exporters"]) <= set(pipeline["exporters"])

    (tracing,) = [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].startswith("gatherly-tracing-")]
    assert tracing["data"]["OTEL_TRACES_EXPORTER"] == "otlp"
    assert tracing["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://gatherly-otel-collector:{ports['otlp-http']}"
    policies = of_kind(manifests, "NetworkPolicy")
    for name in SERVICES:
        deployment = named(manifests, "Deployment", f"gatherly-{name}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": tracing["metadata"]["name"]}} in container["envFrom"], name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        # Egress from the service's pods to the collector's pods on the OTLP port ...
        assert any(
            selects(policy["spec"]["podSelector"], labels)
            and any(
                any("podSelector" in peer and selects(peer["podSelector"], pod_labels) for peer in rule["to"])
                and {"port": ports["otlp-http"], "protocol": "TCP"} in rule["ports"]
                for rule in policy["spec"].get("egress", [])
            )
            for policy in policies
        ), name
        # ... and the collector's ingress from them.
        assert any(
            selects(policy["spec"]["podSelector"], pod_labels)
            and any(
                any("podSelector" in peer and selects(peer["podSelector"], labels) for peer in rule["from"])
                and {"port": ports["otlp-http"], "protocol": "TCP"} in rule["ports"]
                for rule in policy["spec"].get("ingress", [])
            )
            for policy in policies
        ), name


def test_no_secret_is_kept_in_git() -> None:
    for path in [*(ROOT / "deploy").rglob("*.yaml"), *(ROOT / "deploy").rglob("*.yml")]:
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "Secret":
                assert not document.get("data") and not document.get("stringData"), path


@overlays
def test_every_secret_a_pod_reads_comes_from_an_external_secret(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    assert not of_kind(manifests, "Secret")
    made = {e["spec"]["target"].get("name", e["metadata"]["name"]) for e in of_kind(manifests, "ExternalSecret")}
    read = set()
    for _, pod in pod_specs(manifests):
        for container in pod["containers"]:
            read |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e}
    for connect in of_kind(manifests, "KafkaConnect"):
        read |= {v["secret"]["secretName"] for v in connect["spec"]["template"]["pod"]["volumes"]}
    for cluster in of_kind(manifests, "Cluster"):
        read |= {role["passwordSecret"]["name"] for role in cluster["spec"]["managed"]["roles"]}
    assert read, "no secret read at all: the check would prove nothing"
    assert read <= made, read - made
    assert {f"gatherly-database-{service}" for service in SERVICES} <= read


@overlays
def test_settings_are_settings_gatherly_knows(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    known = {f"GATHERLY_{name.upper()}" for name in Settings.model_fields}
    settings = config(rendered[overlay])
    assert set(settings) - known == set()
    assert settings["GATHERLY_MODE"] == "distributed"
    assert settings["GATHERLY_MIGRATE_ON_START"] == "false"  # the Jobs migrate
    assert settings["GATHERLY_RELAY"] == "debezium"  # Debezium publishes the outbox


@overlays
def test_the_ingress_sends_each_prefix_to_the_service_that_owns_it(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    ingress = named(rendered[overlay], "Ingress", "gatherly")
    routes = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    expected = {prefix: f"gatherly-{service}" for service, prefixes in PREFIXES.items() for prefix in prefixes}
    assert routes == {**expected, "/": "gatherly-web"}
    services = {s["metadata"]["name"] for s in of_kind(rendered[overlay], "Service")}
    assert set(routes.values()) <= services


@overlays
def test_debezium_publishes_each_service_outbox(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    (connect,) = of_kind(rendered[overlay], "KafkaConnect")
    (plugin,) = connect["spec"]["build"]["plugins"]
    assert plugin["artifacts"][0]["version"] == "3.6.1.Final"
    connectors = of_kind(rendered[overlay], "KafkaConnector")
    assert sorted(c["spec"]["config"]["database.dbname"] for c in connectors) == sorted(
        f"gatherly_{s}" for s in SERVICES
    )
    assert len({c["spec"]["config"]["slot.name"] for c in connectors}) == len(SERVICES)
    for connector in connectors:
        settings = connector["spec"]["config"]
        assert settings["transforms.outbox.type"] == "io.debezium.transforms.outbox.EventRouter"
        headers = dict(
            item.split(":header:")
            for item in settings["transforms.outbox.table.fields.additional.placement"].split(",")
        )
        assert set(headers.values()) == set(HEADER_FIELDS)
        assert wave(connector) > wave(
            named(rendered[overlay], "Job", f"gatherly-migrate-{settings['database.dbname'].removeprefix('gatherly_')}")
        )


def test_prod_takes_its_values_from_terraform(rendered: dict[str, list[Manifest]]) -> None:
    infra = dict(
        line.split("=", 1) for line in (ROOT / "deploy/k8s/overlays/prod/infra.env").read_text().splitlines() if line
    )
    prod = rendered["prod"]
    assert config(prod)["GATHERLY_KAFKA_BOOTSTRAP_SERVERS"] == infra["KAFKA_BOOTSTRAP_SERVERS"]
    assert config(prod)["GATHERLY_S3_BUCKET"] == infra["IMAGES_BUCKET"]
    assert config(prod)["GATHERLY_SMTP_HOST"] == infra["SES_SMTP_HOST"]
    assert (
        named(prod, "KafkaConnect", "gatherly-debezium")["spec"]["bootstrapServers"] == infra["KAFKA_BOOTSTRAP_SERVERS"]
    )
    assert {c["spec"]["config"]["database.hostname"] for c in of_kind(prod, "KafkaConnector")} == {
        infra["DATABASE_HOST"]
    }
    account = named(prod, "ServiceAccount", "gatherly-images")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == infra["IMAGES_ROLE_ARN"]
    cidrs = {
        peer["ipBlock"]["cidr"]
        for rule in named(prod, "NetworkPolicy", "gatherly-aws-egress")["spec"]["egress"]
        for peer in rule["to"]
    }
    assert cidrs == {infra["VPC_CIDR"]}
    # dev runs its own database and Kafka: nothing of AWS's.
    assert not of_kind(rendered["dev"], "ConfigMap") or all(
        not m["metadata"]["name"].startswith("gatherly-infra") for m in rendered["dev"]
    )


@overlays
def test_images_come_from_the_overlay(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    for name, pod in pod_specs(rendered[overlay]):
        for container in pod["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            # Ours, or the OpenTelemetry Collector's own release (a pinned version).
            ours = ("ghcr.io/gatherly/gatherly", "ghcr.io/gatherly/gatherly-web")
            assert repository in (*ours, "otel/opentelemetry-collector-contrib"), name
            assert tag and tag != "latest", name
            assert repository in ours or re.fullmatch(r"\d+\.\d+\.\d+", tag), name


def test_the_overlays_are_the_argocd_applications() -> None:
    appset = yaml.safe_load((ROOT / "deploy/argocd/applicationset.yaml").read_text())
    environments = [element["env"] for element in appset["spec"]["generators"][0]["list"]["elements"]]
    assert sorted(environments) == sorted(OVERLAYS)
    path = appset["spec"]["template"]["spec"]["source"]["path"]
    for env in environments:
        assert (ROOT / path.replace("{{.env}}", env) / "kustomization.yaml").is_file()


def test_strict_validation_catches_a_misspelt_field(kubeconform: Any, rendered: dict[str, list[Manifest]]) -> None:
    """The schemas refuse unknown fields, for built-in kinds and custom resources alike (else the check is hollow)."""
    assert kubeconform(yaml.safe_dump_all(rendered["dev"])).returncode == 0
    deployment = named(rendered["dev"], "Deployment", "gatherly-users")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    broken = kubeconform(yaml.safe_dump(deployment))
    assert broken.returncode == 1 and "readinessProbes" in broken.stdout
    connector = of_kind(rendered["dev"], "KafkaConnector")[0]
    connector["spec"]["taskMax"] = 1
    broken = kubeconform(yaml.safe_dump(connector))
    assert broken.returncode == 1 and "taskMax" in broken.stdout


def test_the_vendored_schemas_cover_every_custom_kind(rendered: dict[str, list[Manifest]]) -> None:
    for manifests in rendered.values():
        for manifest in manifests:
            group, _, version = manifest["apiVersion"].rpartition("/")
            if "." in group and not group.endswith("k8s.io"):
                assert (ROOT / "deploy/k8s/schemas" / group / f"{manifest['kind'].lower()}_{version}.json").is_file()


def test_yaml_files_under_deploy_parse() -> None:
    for path in (ROOT / "deploy").rglob("*.yaml"):
        list(yaml.safe_load_all(Path(path).read_text()))
