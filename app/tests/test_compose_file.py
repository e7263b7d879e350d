"""deploy/compose.yaml cannot run here (no Docker), so it is kept in step with the stack (gatherly.app.stack) by
reading it: it parses, has the stack's long-running parts and its one-shot jobs, gives the five services the settings
the stack gives them (each documented in docs/operations.md), and its gateway routes the stack's prefix map."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatherly.app.services import ALL
from gatherly.app.stack import COMPONENTS, nginx_config, service_environment

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
ONE_SHOT = {"migrate", "kafka-init", "debezium-register"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_the_compose_file_has_the_stacks_parts_and_its_one_shot_jobs(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(COMPONENTS) | ONE_SHOT
    for name in ALL:
        assert compose["services"][name]["command"] == ["run", name]
    # The services start once the connectors stream (after migrations and topics); the jobs are what they wait for.
    waited: set[str] = set()
    for service in compose["services"].values():
        depends = service.get("depends_on") or {}
        # A list of names is short for "started".
        conditions = depends if isinstance(depends, dict) else {name: {"condition": "started"} for name in depends}
        waited |= {job for job, c in conditions.items() if c["condition"] == "service_completed_successfully"}
    assert waited == ONE_SHOT


def test_the_services_get_the_settings_the_stack_gives_them(compose: dict[str, Any]) -> None:
    stack = service_environment(
        data_dir=Path("/d"),
        database_url="postgresql+asyncpg://u:p@h/gatherly_{service}",
        bootstrap="k:9092",
        public_url="http://localhost:8080",
        users_url="http://u:1",
        s3_endpoint="http://s:1",
        s3_key="k",
        s3_secret="s",
        smtp_port=1025,
    )
    for name in ALL:
        environment = compose["services"][name]["environment"]
        assert set(stack) <= set(environment), name
        fixed = ("GATHERLY_LOG_BACKEND", "GATHERLY_RELAY", "GATHERLY_STORAGE_BACKEND", "GATHERLY_MAIL_BACKEND")
        assert {key: environment[key] for key in fixed} == {key: stack[key] for key in fixed}


def test_every_setting_in_the_compose_file_is_documented_in_operations() -> None:
    documented = set(re.findall(r"`(GATHERLY_[A-Z0-9_]+)`", (REPO / "docs" / "operations.md").read_text()))
    used = set(re.findall(r"\b(GATHERLY_[A-Z0-9_]+)\b", COMPOSE.read_text()))
    assert used and used <= documented, sorted(used - documented)


def locations(config: str) -> set[str]:
    """`location … { proxy_pass http://<service>; }` lines, whitespace-normalised."""
    return {" ".join(line.split()) for line in config.splitlines() if "proxy_pass" in line}


def test_the_gateway_routes_the_stacks_prefix_map_to_each_service(compose: dict[str, Any], tmp_path: Path) -> None:
    gateway = compose["configs"]["gateway"]["content"]
    stack = nginx_config(tmp_path, 8080, {name: [1] for name in ALL}, tmp_path)
    assert locations(gateway) == locations(stack)
    assert set(re.findall(r"upstream (\w+) \{ server (\w+):8000;", gateway)) == {(name, name) for name in ALL}


def test_each_service_has_its_database(compose: dict[str, Any]) -> None:
    created = re.findall(r"CREATE DATABASE (\w+);", compose["configs"]["databases"]["content"])
    template = compose["x-gatherly-env"]["GATHERLY_DATABASE_URL"].rsplit("/", 1)[1]
    assert created == [template.replace("{service}", name) for name in ALL]
