"""Two real notifications processes sharing the embedded log's files and the database (distributed style): a
`gatherly up` and a `gatherly run notifications`. A notification is written by whichever process's consumer handled
its cause, and reaches the person's live streams on both: each stream learns of it from the log, not from the memory
of the process that wrote it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from gatherly.app.services import ALL
from gatherly.app.testing import sign_up, start_gatherly, until_ready
from gatherly.kernel.testing import DB_BACKENDS, scratch_databases

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _notifications(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The stream's `notification` frames, as their fields."""
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame.get("event") == "notification":
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def _titles(response: httpx.Response, count: int) -> list[str]:
    titles: list[str] = []
    async for frame in _notifications(response):
        titles.append(json.loads(frame["data"])["title"])
        if len(titles) == count:
            break
    return titles


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_notification_reaches_live_streams_held_on_either_of_two_processes(
    tmp_path: Path, database_backend: str
) -> None:
    data_dir = tmp_path / "data"
    whole, alone = _free_port(), _free_port()
    async with scratch_databases(database_backend, tmp_path, list(ALL)) as database_url:
        env = {
            **os.environ,
            "GATHERLY_DATA_DIR": str(data_dir),  # the embedded log's files, shared by both processes
            "GATHERLY_DATABASE_URL": database_url,  # and the databases
            "GATHERLY_MIGRATE_ON_START": "true",
            # Tokens are the users service's (in the first process); the second verifies them with its JWKS there.
            "GATHERLY_PUBLIC_URL": f"http://127.0.0.1:{whole}",
            "GATHERLY_PASSWORD_TIME_COST": "1",
            "GATHERLY_PASSWORD_MEMORY_KIB": "8",
            "GATHERLY_PASSWORD_PARALLELISM": "1",
            "GATHERLY_SIGNUP_LIMIT_PER_MINUTE": "0",
            "GATHERLY_LOGIN_LIMIT_PER_MINUTE": "0",
            "GATHERLY_NOTIFICATION_HEARTBEAT_SECONDS": "1",
            "GATHERLY_LOG_JSON": "true",
        }
        first = start_gatherly(env, "up", "--no-demo", "--port", str(whole))
        second: subprocess.Popen[bytes] | None = None
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{whole}", timeout=30) as one,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{alone}", timeout=30) as other,
            ):
                await until_ready(one, first)
                second = start_gatherly(env, "run", "notifications", "--port", str(alone))
                await until_ready(other, second)
                running = SimpleNamespace(client=one, mail_dir=data_dir / "mail")
                olga = await sign_up(running, display_name="Olga")  # type: ignore[arg-type]
                ann = await sign_up(running, display_name="Ann")  # type: ignore[arg-type]
                group = await one.post("/api/groups", json={"name": "Choir"}, headers=olga.auth)
                group_id = group.json()["id"]
                assert (await one.post(f"/api/groups/{group_id}/join", json={}, headers=ann.auth)).status_code == 200

                async with (
                    one.stream("GET", "/api/notifications/stream", headers=ann.auth) as on_first,
                    other.stream("GET", "/api/notifications/stream", headers=ann.auth) as on_second,
                ):
                    assert on_first.status_code == on_second.status_code == 200
                    subjects = ["Hello both", "Still there"]
                    for subject in subjects:
                        sent = await one.post(
                            f"/api/groups/{group_id}/announcements",
                            json={"subject": subject, "body": "."},
                            headers=olga.auth,
                        )
                        assert sent.status_code == 202
                    expected = [f"Choir: {subject}" for subject in subjects]
                    # One process wrote them; the stream on the other learnt of them from the log all the same.
                    got = await asyncio.wait_for(
                        asyncio.gather(_titles(on_first, len(subjects)), _titles(on_second, len(subjects))), 60
                    )
                    assert got == [expected, expected]
        finally:
            for process in (second, first):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)
