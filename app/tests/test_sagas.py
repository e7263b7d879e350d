"""Operators' view of sagas: `gatherly sagas list|show` over every service database, the `gatherly_sagas` gauge at
/metrics, and the error line logged when a saga fails (a group deletion here; account deletions in the users
service's tests)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from structlog.testing import capture_logs
from typer.testing import CliRunner

from gatherly.app import cli as cli_module
from gatherly.app.testing import FAST_SETTINGS, Person, RunningGatherly, running_gatherly, sign_up
from gatherly.groups.tasks import watch_deletions
from gatherly.kernel import sagas as sagas_module
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.testing import DB_BACKENDS


@pytest.fixture(params=DB_BACKENDS)
async def running(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGatherly]:
    # The gauge is counted every 15 s in production; here often, so a test sees it change.
    monkeypatch.setattr(sagas_module, "SAGA_GAUGE_INTERVAL", 0.05)
    async with running_gatherly(
        tmp_path / "data", ["users", "groups"], database_backend=request.param, **FAST_SETTINGS
    ) as gatherly:
        yield gatherly


async def _deleted_group(running: RunningGatherly, organizer: Person) -> str:
    created = await running.client.post("/api/groups", json={"name": "Saga Group"}, headers=organizer.auth)
    assert created.status_code == 201, created.text
    group_id: str = created.json()["id"]
    assert (await running.client.delete(f"/api/groups/{group_id}", headers=organizer.auth)).status_code == 202
    return group_id


async def _deleted_account(running: RunningGatherly, person: Person) -> str:
    response = await running.client.delete("/api/users/me", headers=person.auth)
    assert response.status_code == 202, response.text
    await running.settle()  # the groups service has replied, the users service has erased the account
    deletion_id: str = response.json()["deletion_id"]
    return deletion_id


async def _fail_group_deletions(running: RunningGatherly, group_id: str) -> list[dict[str, Any]]:
    """Run the groups service's real timeout loop with the clock past the deadline until `group_id` has failed;
    what it logged."""
    platform = running.process.platform
    saved = platform.clock
    platform.clock = FrozenClock(datetime.now(UTC) + timedelta(days=1))
    try:
        with capture_logs() as logs:
            task = asyncio.create_task(watch_deletions(running.process.host("groups").context))
            deadline = time.monotonic() + 10
            while not any(entry.get("group_id") == group_id for entry in logs):
                assert time.monotonic() < deadline, "the group deletion did not fail"
                await asyncio.sleep(0.02)
            task.cancel()
    finally:
        platform.clock = saved
    return logs


async def _cli(monkeypatch: pytest.MonkeyPatch, running: RunningGatherly, *args: str) -> Any:
    # Wide enough that rich never shortens an id; the command runs its own event loop, as in its own process.
    monkeypatch.setattr(cli_module, "console", Console(width=400))
    env = {
        "GATHERLY_DATA_DIR": str(running.settings.data_dir),
        "GATHERLY_DATABASE_URL": running.settings.database_url.get_secret_value(),
    }
    return await asyncio.to_thread(CliRunner().invoke, cli_module.app, ["sagas", *args], env=env)


async def test_the_sagas_commands_list_and_show_the_sagas_of_every_service(
    running: RunningGatherly, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, zed = await sign_up(running, display_name="Ann"), await sign_up(running, display_name="Zed")
    group_id = await _deleted_group(running, ann)
    deletion_id = await _deleted_account(running, zed)
    await _fail_group_deletions(running, group_id)

    listed = await _cli(monkeypatch, running, "list")
    assert listed.exit_code == 0, listed.output
    [group_row] = [line for line in listed.output.splitlines() if group_id in line]
    assert re.search(r"groups\s+│\s+group_deletion\s+│\s+\S+\s+│\s+failed\s+│\s+cancel_events", group_row), group_row
    [account_row] = [line for line in listed.output.splitlines() if deletion_id in line]
    assert re.search(r"users\s+│\s+account_deletion\s+│\s+\S+\s+│\s+pending\s+│\s+await_replies", account_row)
    answered = account_row.split("│")[6]  # who answered so far, by time: the erasure here and the groups service
    assert sorted(answered.strip().split(", ")) == ["groups", "users"], account_row

    failed = await _cli(monkeypatch, running, "list", "--status", "failed")
    assert group_id in failed.output and deletion_id not in failed.output
    accounts = await _cli(monkeypatch, running, "list", "--kind", "account_deletion")
    assert deletion_id in accounts.output and group_id not in accounts.output

    shown = await _cli(monkeypatch, running, "show", deletion_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert any(re.fullmatch(r"\s*status\s+pending\s*", line) for line in lines), shown.output
    [groups_reply] = [line for line in lines if re.match(r"│ groups\s+│", line)]
    assert '"memberships": 0' in groups_reply and re.search(r"\d{4}-\d\d-\d\dT", groups_reply)
    assert any(re.match(r"│ users\s+│", line) for line in lines)
    assert zed.user_id in shown.output  # the saga's own data: whose account it is

    missing = await _cli(monkeypatch, running, "show", "no-such-saga")
    assert missing.exit_code == 1 and "no saga no-such-saga" in missing.output


async def test_a_failed_saga_is_logged_as_an_error_and_counted_by_the_gauge(running: RunningGatherly) -> None:
    ann, zed = await sign_up(running, display_name="Ann"), await sign_up(running, display_name="Zed")
    group_id = await _deleted_group(running, ann)
    await _deleted_account(running, zed)
    await _gauge_shows(running, 'kind="group_deletion",service="groups",status="pending"} 1.0')

    logs = await _fail_group_deletions(running, group_id)

    [line] = [entry for entry in logs if entry.get("group_id") == group_id]
    assert (line["log_level"], line["event"]) == ("error", "group deletion saga timed out")
    assert "cancel_events" in line["reason"]
    await _gauge_shows(running, 'kind="group_deletion",service="groups",status="failed"} 1.0')
    await _gauge_shows(running, 'kind="group_deletion",service="groups",status="pending"} 0.0')
    await _gauge_shows(running, 'kind="account_deletion",service="users",status="pending"} 1.0')


async def _gauge_shows(running: RunningGatherly, sample: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metrics = (await running.client.get("/metrics")).text
        if f"gatherly_sagas{{{sample}" in metrics:
            return
        assert time.monotonic() < deadline, [line for line in metrics.splitlines() if "gatherly_sagas" in line]
        await asyncio.sleep(0.05)
