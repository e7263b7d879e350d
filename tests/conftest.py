"""Fixtures of the cross-service API tests: one whole Gatherly per module and target, with cheap password hashes and
no per-address limits (these tests sign many people up from one address).

Targets (GATHERLY_TEST_TARGET, comma-separated): `in-process` (the default) runs every module on an in-process
Gatherly per database backend (GATHERLY_TEST_DB_BACKENDS); `stack` runs them against one detached `gatherly stack
up` as well (each service its own process on PostgreSQL, Kafka, Debezium, SeaweedFS, an SMTP sink, nginx), started
once per session. Tests marked `in_process_only` reach into a process (its log, databases or settings) and are
deselected for the stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from gatherly.app.services import ALL
from gatherly.app.stack import StackState
from gatherly.app.testing import FAST_SETTINGS, RunningGatherly, StackGatherly, running_gatherly, served_gatherly
from gatherly.kernel.kafka_connect import drop_slot, outbox_connector
from gatherly.kernel.testing import DB_BACKENDS, free_port, scratch_databases

FAST: dict[str, Any] = {**FAST_SETTINGS, "password_reset_limit_per_minute": 0}
TARGETS = [t.strip() for t in os.environ.get("GATHERLY_TEST_TARGET", "in-process").split(",") if t.strip()]
if unknown := set(TARGETS) - {"in-process", "stack"}:
    raise ValueError(f"GATHERLY_TEST_TARGET: unknown target(s) {sorted(unknown)} (known: in-process, stack)")
PARAMS = [*(DB_BACKENDS if "in-process" in TARGETS else []), *(["stack"] if "stack" in TARGETS else [])]
# The stack's five services, Kafka, Connect and its connectors start in minutes on a busy two-core machine.
STACK_START_S = 1200
T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that reach into a process cannot run against the stack: deselected there (reported, not skipped)."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_stack = callspec is not None and callspec.params.get("gatherly") == "stack"
        (drop if on_stack and item.get_closest_marker("in_process_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@dataclass(frozen=True)
class DetachedStack:
    url: str  # the gateway, on the loopback
    public_url: str  # as the services know it (links in mail, the allowed CORS origin)
    data_dir: Path
    database_url: str
    bootstrap: str


def _gatherly(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "gatherly.app", *args], env=env, check=True, timeout=STACK_START_S)


@pytest.fixture(scope="session")
def detached_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DetachedStack]:
    """`gatherly stack up --detach` with a Kafka and Connect of its own on scratch PostgreSQL databases, once per
    session; `gatherly stack down` at the end, then its replication slots dropped (so the databases can go)."""
    folder = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = {**os.environ, **{f"GATHERLY_{name.upper()}": str(value) for name, value in FAST.items()}}
    # Asked for from inside a module's running event loop: the databases are made and dropped on a loop of their own
    # in a thread (one loop for both, as their admin connection lives on it).
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    databases = scratch_databases("postgresql", folder, list(ALL))
    template = run(databases.__aenter__())
    try:
        data_dir = folder / "data"
        arguments = ["--port", str(port), "--data-dir", str(data_dir), "--database-url", template]
        _gatherly("stack", "up", "--detach", *arguments, env=env)
        try:
            state = StackState.load(data_dir)
            assert state is not None, "the stack said it was ready but wrote no stack.json"
            [kafka] = [component for component in state.components if component.name == "kafka"]
            gateway = f"http://127.0.0.1:{port}"
            yield DetachedStack(gateway, state.url, data_dir, template, f"127.0.0.1:{kafka.port}")
        finally:
            _gatherly("stack", "down", "--data-dir", str(data_dir))
            for name in ALL:
                url = template.replace("{service}", name)
                run(drop_slot(url, outbox_connector(name, url).slot))
    finally:
        run(databases.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS if "in-process" in TARGETS else [])
async def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGatherly]:
    """The in-process Gatherly served over TCP by uvicorn as `gatherly up` serves it (`served_gatherly`), for what
    the wire does to a request that the in-process client's ASGI transport skips (the HTTP parser, the path's
    percent-escapes decoded by the server). The stack's target is over the wire already."""
    async with served_gatherly(
        tmp_path_factory.mktemp("served") / "data", free_port(), database_backend=request.param, **FAST
    ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=PARAMS)
async def gatherly(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGatherly]:
    if request.param == "stack":
        stack: DetachedStack = request.getfixturevalue("detached_stack")
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            yield StackGatherly(client, stack.public_url, stack.data_dir, stack.database_url, stack.bootstrap)
        return
    async with running_gatherly(
        tmp_path_factory.mktemp("api") / "data", database_backend=request.param, **FAST
    ) as running:
        yield running
