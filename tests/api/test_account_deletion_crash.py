"""A `gatherly up` SIGKILLed in the middle of an account deletion: after a restart the saga still completes, every
service having answered once, and the group whose last organizer was deleted has its new organizer."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from gatherly.app.services import ALL
from gatherly.app.testing import sign_up, start_gatherly, until_ready
from gatherly.kernel.db import Database
from gatherly.kernel.sagas import SagaState, find_saga
from gatherly.kernel.testing import DB_BACKENDS, free_port, scratch_databases

pytestmark = pytest.mark.slow

EVERYONE = {"users", "groups", "events", "notifications", "images"}


async def _saga(users_url: str, deletion_id: str) -> SagaState:
    db = Database(users_url)
    try:
        async with db.read_connection() as connection:
            [saga] = await find_saga(connection, deletion_id)
        return saga
    finally:
        await db.dispose()


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_sigkill_in_the_middle_of_an_account_deletion_and_a_restart_still_complete_it(
    tmp_path: Path, database_backend: str
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    async with scratch_databases(database_backend, tmp_path, list(ALL)) as database_url:
        users_url = database_url.replace("{service}", "users")
        env = {
            **os.environ,
            "GATHERLY_DATA_DIR": str(data_dir),
            "GATHERLY_DATABASE_URL": database_url,
            "GATHERLY_MIGRATE_ON_START": "true",
            "GATHERLY_PASSWORD_TIME_COST": "1",
            "GATHERLY_PASSWORD_MEMORY_KIB": "8",
            "GATHERLY_PASSWORD_PARALLELISM": "1",
            "GATHERLY_SIGNUP_LIMIT_PER_MINUTE": "0",
            "GATHERLY_LOGIN_LIMIT_PER_MINUTE": "0",
            "GATHERLY_MAIL_RETRY_INITIAL_DELAY": "0.1",
            "GATHERLY_MAIL_POLL_INTERVAL": "0.2",
            "GATHERLY_LOG_JSON": "true",
        }
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            process = start_gatherly(env, "up", "--no-demo", "--port", str(port))
            try:
                await until_ready(client, process)
                running = SimpleNamespace(client=client, mail_dir=data_dir / "mail")
                zed = await sign_up(running, display_name="Zed")  # type: ignore[arg-type]
                ann = await sign_up(running, display_name="Ann")  # type: ignore[arg-type]
                created = await client.post("/api/groups", json={"name": "Zed's club"}, headers=zed.auth)
                assert created.status_code == 201, created.text
                club = created.json()["id"]
                assert (await client.post(f"/api/groups/{club}/join", json={}, headers=ann.auth)).status_code == 200

                deleted = await client.delete("/api/users/me", headers=zed.auth)
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                assert deleted.status_code == 202, deleted.text
                deletion_id = deleted.json()["deletion_id"]
                at_kill = await _saga(users_url, deletion_id)
                assert at_kill.status == "pending", "the kill came after the saga had completed: nothing was tested"

                process = start_gatherly(env, "up", "--no-demo", "--port", str(port))
                await until_ready(client, process)
                deadline = time.monotonic() + 90
                while (saga := await _saga(users_url, deletion_id)).status == "pending":
                    assert time.monotonic() < deadline, f"still pending; answered: {list(saga.replies)}"
                    await asyncio.sleep(0.2)
                assert (saga.status, set(saga.replies)) == ("completed", EVERYONE), saga
                members = (await client.get(f"/api/groups/{club}/members", headers=ann.auth)).json()["items"]
                assert [(m["user_id"], m["role"]) for m in members] == [(ann.user_id, "organizer")]
                print(f"answered before the kill: {list(at_kill.replies) or 'nobody'}")
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)
