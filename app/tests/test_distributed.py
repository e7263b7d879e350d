"""Gatherly on Kafka, used end to end through its HTTP API as a person would (sign up, a group, an event, an RSVP):
`gatherly up` with GATHERLY_LOG_BACKEND=kafka (one process, its events on the session's broker), and `gatherly stack
up` (each service its own process on its own PostgreSQL database, Debezium publishing the outboxes, nginx in front)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner

from gatherly.app.cli import app
from gatherly.app.devmail import newest_link_token
from gatherly.app.services import ALL
from gatherly.app.stack import COMPONENTS, STATE_FILE, StackState, alive
from gatherly.kernel.kafka_connect import ConnectClient, ConnectWorker, drop_slot, outbox_connector
from gatherly.kernel.testing import DB_BACKENDS, LOG_BACKENDS, free_port, scratch_databases

DEADLINE_S = 60.0
T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = DEADLINE_S) -> T:
    """Poll until `check` returns something (each step waits for events another service must have handled)."""
    deadline = time.monotonic() + timeout
    while (response := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)
    return response


def sign_up(client: httpx.Client, mail_dir: Path, name: str) -> dict[str, str]:
    email, password = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.org", "correct horse battery staple"
    body = {"email": email, "password": password, "display_name": name}
    assert client.post("/api/auth/signup", json=body).status_code == 202
    token = eventually(lambda: newest_link_token(mail_dir, email), f"{name}'s confirmation mail")
    assert client.post("/api/auth/confirm", json={"token": token}).status_code == 200
    login = client.post("/api/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def answered(response: httpx.Response, status: int) -> httpx.Response | None:
    return response if response.status_code == status else None


def journey(client: httpx.Client, mail_dir: Path) -> None:
    """Sign-ups, a group, an event and an RSVP, each step waiting for what other services must have learnt."""
    olga, ann = sign_up(client, mail_dir, "Olga"), sign_up(client, mail_dir, "Ann")
    group = client.post("/api/groups", json={"name": "Kafka runners"}, headers=olga)
    assert group.status_code == 201, group.text
    group_id = group.json()["id"]
    assert client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=ann).status_code == 200

    starts = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    body: dict[str, Any] = {
        "group_id": group_id,
        "title": "Evening run",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "timezone": "Europe/Berlin",
        "venue": {"name": "Tiergarten", "address": "Strasse des 17. Juni"},
    }
    # The events service learns of the group and of Olga's leadership from the groups service's events (its read
    # model, fed through Kafka): until then it cannot let her schedule in that group.
    event = eventually(
        lambda: answered(client.post("/api/events", json=body, headers=olga), 201), "the event scheduled"
    ).json()
    # Ann's membership, also learned through Kafka, lets her RSVP.
    rsvp = eventually(
        lambda: answered(
            client.put(f"/api/events/{event['id']}/rsvp", json={"response": "yes", "guests": 0}, headers=ann),
            200,
        ),
        "Ann's RSVP accepted",
    )
    assert rsvp.json()["status"] == "going"

    def ann_told(kind: str) -> httpx.Response | None:
        inbox = client.get("/api/notifications", params={"limit": 100}, headers=ann)
        return inbox if kind in [item["kind"] for item in inbox.json()["items"]] else None

    # The notifications service heard of her RSVP (events → Kafka → notifications). (Not of the event itself
    # reliably: whether she is told depends on which of two topics, membership and event, it read first.)
    eventually(lambda: ann_told("rsvp_confirmed"), "Ann told her RSVP is confirmed")


def test_debezium_register_refuses_sqlite_databases_and_unknown_services(tmp_path: Path) -> None:
    env = {"GATHERLY_DATA_DIR": str(tmp_path)}  # no database URL: SQLite files, which Debezium cannot read
    refused = CliRunner().invoke(app, ["debezium", "register", "users"], env=env)
    assert refused.exit_code == 2, refused.output
    assert "Debezium reads PostgreSQL only" in " ".join(refused.output.split())
    unknown = CliRunner().invoke(app, ["debezium", "register", "payments"], env=env)
    assert unknown.exit_code == 2
    assert "payments" in unknown.output


if "kafka" in LOG_BACKENDS:  # the broker is started only when the Kafka backend is under test

    @pytest.fixture
    def up_on_kafka(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
        port = free_port()
        env = {
            **os.environ,
            "GATHERLY_DATA_DIR": str(tmp_path),
            "GATHERLY_LOG_BACKEND": "kafka",
            "GATHERLY_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "GATHERLY_LOG_JSON": "true",
            # Cheap password hashes: hashing cost is the users service's business, not this test's.
            "GATHERLY_PASSWORD_TIME_COST": "1",
            "GATHERLY_PASSWORD_MEMORY_KIB": "8",
            "GATHERLY_PASSWORD_PARALLELISM": "1",
            "GATHERLY_MAIL_POLL_INTERVAL": "0.2",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gatherly.app", "up", "--no-demo", "--port", str(port)],
            env=env,
            stdout=(tmp_path / "gatherly.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:

                def ready() -> httpx.Response | None:
                    if process.poll() is not None:
                        log = (tmp_path / "gatherly.log").read_text()[-3000:]
                        raise AssertionError(f"gatherly up exited ({process.returncode}): {log}")
                    try:
                        return answered(client.get("/readyz"), 200)
                    except httpx.TransportError:
                        return None

                eventually(ready, "gatherly up ready on Kafka")
                yield client, tmp_path / "mail"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    @pytest.mark.timeout(900)  # the session's broker may start first
    def test_gatherly_up_on_kafka_carries_events_between_its_services(
        up_on_kafka: tuple[httpx.Client, Path],
    ) -> None:
        journey(*up_on_kafka)


CHEAP_HASHES = {
    # Cheap password hashes: hashing cost is the users service's business, not these tests'.
    "GATHERLY_PASSWORD_TIME_COST": "1",
    "GATHERLY_PASSWORD_MEMORY_KIB": "8",
    "GATHERLY_PASSWORD_PARALLELISM": "1",
    "GATHERLY_MAIL_POLL_INTERVAL": "0.2",
}


def in_process_group(pgid: int) -> list[str]:
    """Processes whose process group is `pgid` (from /proc), as "pid command" lines."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (command) state ppid pgrp …": the command may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{stat.parent.name} {text[text.index('(') + 1 : text.rindex(')')]}")
    return found


def gatherly_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatherly.app", *args], env=env, capture_output=True, text=True, timeout=900
    )


if "kafka" in LOG_BACKENDS and "postgresql" in DB_BACKENDS:

    @pytest.fixture
    async def detached_stack(
        kafka_bootstrap: str, kafka_connect: ConnectWorker, tmp_path: Path
    ) -> AsyncIterator[tuple[httpx.Client, Path, list[str]]]:
        """`gatherly stack up --detach` on the session's Kafka and Connect (it starts its own when not given them)
        and scratch databases; its client, data directory, and the arguments it was started with."""
        async with scratch_databases("postgresql", tmp_path, list(ALL)) as template:
            port = free_port()
            data_dir = tmp_path / "stack"
            arguments = ["--port", str(port), "--data-dir", str(data_dir), "--database-url", template]
            arguments += ["--kafka-bootstrap", kafka_bootstrap, "--connect-url", kafka_connect.url]
            env = {**os.environ, **CHEAP_HASHES}
            try:
                up = await asyncio.to_thread(gatherly_command, "stack", "up", "--detach", *arguments, env=env)
                assert up.returncode == 0, up.stdout + up.stderr
                assert "Gatherly is up" in up.stdout  # the progress it showed while starting
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
                    yield client, data_dir, arguments
            finally:
                if (data_dir / STATE_FILE).exists():  # a failed test: stop what it started
                    await asyncio.to_thread(gatherly_command, "stack", "down", "--data-dir", str(data_dir))
                async with ConnectClient(kafka_connect.url) as connect:
                    for name in ALL:
                        connector = outbox_connector(name, template.replace("{service}", name))
                        await connect.delete(connector.name)
                        await drop_slot(template.replace("{service}", name), connector.slot)

    # Whole minutes on a busy two-core machine: five service processes start, five replication slots are made (each
    # waits for the server's running transactions), and the session's Kafka and Connect may start first.
    @pytest.mark.timeout(1200)
    async def test_the_detached_stack_runs_each_service_behind_nginx_says_what_runs_and_stops_without_orphans(
        detached_stack: tuple[httpx.Client, Path, list[str]],
    ) -> None:
        client, data_dir, arguments = detached_stack
        # Debezium publishes every event (the services' polling relays are off), nginx routes each prefix, and the
        # mail comes through SMTP to the sink's folder.
        await asyncio.to_thread(journey, client, data_dir / "mail")

        status = await asyncio.to_thread(gatherly_command, "stack", "status", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stdout
        state = StackState.load(data_dir)
        assert state is not None and state.ready
        mine = [name for name in COMPONENTS if name not in ("kafka", "kafka-connect")]  # those two were given
        assert [c.name for c in state.components] == mine
        for component in state.components:
            assert re.search(rf"{component.name}\s+\S\s+up\s+\S\s+{component.pid or '.system.'}", status.stdout)

        again = await asyncio.to_thread(gatherly_command, "stack", "up", "--detach", *arguments)
        assert again.returncode == 1 and "already runs" in " ".join(again.stdout.split()), again.stdout

        groups = next(c for c in state.components if c.name == "groups")
        assert groups.pid is not None
        os.kill(groups.pid, signal.SIGKILL)  # its port closes with it
        status = await asyncio.to_thread(gatherly_command, "stack", "status", "--data-dir", str(data_dir))
        assert status.returncode == 1 and re.search(r"groups\s+\S\s+down", status.stdout), status.stdout

        down = await asyncio.to_thread(gatherly_command, "stack", "down", "--data-dir", str(data_dir))
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
        assert "killing" not in down.stdout  # everything stopped when asked
        assert in_process_group(state.pgid) == []
        assert not any(alive(pid) for pid in [state.pid, *(c.pid for c in state.components if c.pid)])
        assert not (data_dir / STATE_FILE).exists()
        for name in ALL:
            if name != "groups":  # each other service stopped gracefully
                assert "service stopped" in (data_dir / "logs" / f"{name}.log").read_text(), name
        gone = await asyncio.to_thread(gatherly_command, "stack", "status", "--data-dir", str(data_dir))
        assert gone.returncode == 3 and "no stack runs" in gone.stdout
