"""The composition root: a process starts every service before anything runs on top of it, and the `gatherly`
command refuses settings it cannot honour with a message instead of a traceback."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from asgi_lifespan import LifespanManager
from typer.testing import CliRunner

from gatherly.app import testing
from gatherly.app.cli import app
from gatherly.app.compose import Process, build_log
from gatherly.kernel.log import EmbeddedLog, KafkaLog


async def test_on_started_runs_once_every_service_is_ready_and_the_stop_reverses_the_start(tmp_path: Path) -> None:
    process = Process(testing.test_settings(tmp_path), ["users", "groups"], serve_web=False)
    seen: list[dict[str, bool]] = []

    async def started() -> None:
        seen.append({host.name: host.context.readiness.ready for host in process.hosts})

    process.on_started.append(started)
    async with LifespanManager(process, startup_timeout=60, shutdown_timeout=60):
        assert seen == [{"users": True, "groups": True}]
    assert not any(host.context.readiness.ready for host in process.hosts)


def test_gatherly_refuses_an_unknown_log_backend_with_a_clear_message(tmp_path: Path) -> None:
    env = {"GATHERLY_LOG_BACKEND": "rabbitmq", "GATHERLY_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["migrate"], env=env)
    output = re.sub(r"\s+", " ", result.output)
    assert result.exit_code == 2, output
    assert "invalid setting GATHERLY_LOG_BACKEND" in output
    assert "'embedded' or 'kafka'" in output
    assert "Traceback" not in output
    assert not (tmp_path / "users.db").exists()  # refused before anything was touched


def test_the_kafka_log_backend_builds_a_kafka_log_from_the_settings(tmp_path: Path) -> None:
    settings = testing.test_settings(
        tmp_path,
        log_backend="kafka",
        kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092",
        kafka_replication_factor=3,
        kafka_session_timeout=7.5,
    )
    log = build_log(settings, ["users"])
    assert isinstance(log, KafkaLog)
    assert (log.bootstrap_servers, log.replication_factor, log.session_timeout) == ("kafka-1:9092,kafka-2:9092", 3, 7.5)
    assert isinstance(build_log(testing.test_settings(tmp_path), ["users"]), EmbeddedLog)


async def test_the_process_is_not_ready_while_a_services_background_task_is_down(tmp_path: Path) -> None:
    async with testing.running_gatherly(tmp_path, ["users"], supervision_unready_after=0.05) as running:
        assert (await running.client.get("/readyz")).status_code == 200
        host = running.process.host("users")

        async def broken() -> None:
            raise RuntimeError("the mail server is on fire")

        host.supervisor.start("broken task", broken)
        deadline = time.monotonic() + 10
        while (response := await running.client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "the process stayed ready with a task down"
            await asyncio.sleep(0.02)
        assert response.status_code == 503
        assert "users" in response.json()["detail"] and "broken task" in response.json()["detail"]
