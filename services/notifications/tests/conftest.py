"""Fixtures of the notifications service's tests: a whole Gatherly (the users, groups and events services' events
feed the notifications service, as in production) with cheap password hashes, and helpers over the HTTP API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gatherly.app.testing import FAST_SETTINGS, Person, RunningGatherly, mail_to, running_gatherly, sign_up
from gatherly.kernel.testing import DB_BACKENDS

FAST: dict[str, Any] = {
    **FAST_SETTINGS,
    "notification_retry_initial_delay": 0.05,
    "notification_retry_max_delay": 0.2,
    "notification_poll_interval": 0.2,
    "notification_heartbeat_seconds": 0.5,
    "notification_streams_per_person": 2,  # test_stream.py opens one more
}


def soon(days: float = 7) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition") -> None:
    """Wait until `check` holds (polling a real condition, never a fixed sleep; the timeout is for a loaded CI
    machine)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} still not true after {timeout}s")
        await asyncio.sleep(0.02)


@dataclass
class NotificationsApi:
    """Thin helpers over the HTTP API, asserting the status of each step that is setup, not the point of a test."""

    running: RunningGatherly
    _count: list[int] = field(default_factory=lambda: [0])

    @property
    def client(self) -> httpx.AsyncClient:
        return self.running.client

    async def person(self, display_name: str = "Test Person") -> Person:
        return await sign_up(self.running, display_name=display_name)

    async def group(self, organizer: Person, *members: Person, **fields: Any) -> str:
        response = await self.client.post("/api/groups", json={"name": "Runners", **fields}, headers=organizer.auth)
        assert response.status_code == 201, response.text
        group_id: str = response.json()["id"]
        for person in members:
            joined = await self.client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=person.auth)
            assert joined.status_code == 200, joined.text
        await self.running.settle()
        return group_id

    async def schedule(self, leader: Person, group_id: str, **fields: Any) -> dict[str, Any]:
        starts = soon()
        body: dict[str, Any] = {
            "group_id": group_id,
            "title": "Evening run",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=2)).isoformat(),
            "timezone": "Europe/Berlin",
            "venue": {"name": "Tiergarten", "address": "Strasse des 17. Juni"},
            **fields,
        }
        response = await self.client.post("/api/events", json=body, headers=leader.auth)
        assert response.status_code == 201, response.text
        await self.running.settle()
        event: dict[str, Any] = response.json()
        return event

    async def rsvp(self, person: Person, event_id: str, answer: str = "yes") -> dict[str, Any]:
        response = await self.client.put(
            f"/api/events/{event_id}/rsvp", json={"response": answer, "guests": 0}, headers=person.auth
        )
        assert response.status_code == 200, response.text
        await self.running.settle()
        result: dict[str, Any] = response.json()
        return result

    async def inbox(self, person: Person, **params: Any) -> dict[str, Any]:
        await self.running.settle()
        response = await self.client.get("/api/notifications", params=params, headers=person.auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def kinds(self, person: Person) -> list[str]:
        return [item["kind"] for item in (await self.inbox(person, limit=100))["items"]]

    def mail(self, person: Person) -> list[Any]:
        return mail_to(self.running.mail_dir, person.email)

    async def wait_for_mail(self, person: Person, subject_part: str) -> Any:
        found: list[Any] = []

        async def arrived() -> bool:
            found[:] = [m for m in self.mail(person) if subject_part in str(m["Subject"])]
            return bool(found)

        await eventually(arrived, what=f"mail {subject_part!r} to {person.display_name}")
        return found[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NotificationsApi]:
    """One Gatherly for a whole test module (its tests run in the module's event loop:
    `pytestmark = pytest.mark.asyncio(loop_scope="module")`). Tests on it make their own people and groups."""
    async with running_gatherly(
        tmp_path_factory.mktemp("notifications") / "data", database_backend=request.param, **FAST
    ) as running:
        yield NotificationsApi(running)
