"""Fixtures of the events service's tests: a whole Gatherly (the groups service's events feed the events
service's read models, as in production) with cheap password hashes, and helpers over the HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gatherly.app.testing import FAST_SETTINGS, ApiHelpers, Person, running_gatherly
from gatherly.kernel.testing import DB_BACKENDS


def soon(days: float = 7, hours: float = 0) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days, hours=hours)).replace(microsecond=0)


def an_hour_from(starts: datetime) -> dict[str, str]:
    """An event's `starts_at` and `ends_at` for an hour from `starts` (in its offset), as a body writes them."""
    return {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=1)).isoformat()}


@dataclass
class EventsApi(ApiHelpers):
    """Thin helpers over the HTTP API, asserting the status of each step that is setup, not the point of a test."""

    async def group(self, organizer: Person, *, members: dict[Person, str] | None = None, **fields: Any) -> str:
        """A group founded by `organizer` with `members` in the given roles, known to the events service."""
        response = await self.client.post("/api/groups", json={"name": "Runners", **fields}, headers=organizer.auth)
        assert response.status_code == 201, response.text
        group_id: str = response.json()["id"]
        for person, role in (members or {}).items():
            await self.join(person, group_id)
            if role != "member":
                response = await self.client.put(
                    f"/api/groups/{group_id}/members/{person.user_id}/role",
                    json={"role": role},
                    headers=organizer.auth,
                )
                assert response.status_code == 200, response.text
        await self.running.settle()
        return group_id

    async def join(self, person: Person, group_id: str) -> None:
        response = await self.client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=person.auth)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "member", "helpers use open groups"

    soon = staticmethod(soon)
    an_hour_from = staticmethod(an_hour_from)

    @staticmethod
    def event_body(group_id: str, **fields: Any) -> dict[str, Any]:
        return event_body(group_id, **fields)

    async def schedule(self, leader: Person, group_id: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.post("/api/events", json=event_body(group_id, **fields), headers=leader.auth)
        assert response.status_code == 201, response.text
        event: dict[str, Any] = response.json()
        return event

    async def rsvp(self, person: Person, event_id: str, response: str = "yes", guests: int = 0) -> httpx.Response:
        return await self.client.put(
            f"/api/events/{event_id}/rsvp", json={"response": response, "guests": guests}, headers=person.auth
        )

    async def going(self, person: Person, event_id: str, guests: int = 0) -> dict[str, Any]:
        answer = await self.rsvp(person, event_id, "yes", guests)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def get(self, event_id: str, person: Person | None = None) -> dict[str, Any]:
        response = await self.client.get(f"/api/events/{event_id}", headers=person.auth if person else {})
        assert response.status_code == 200, response.text
        event: dict[str, Any] = response.json()
        return event

    async def attendees(self, event_id: str, person: Person | None = None) -> list[tuple[str, str, int | None]]:
        """(user id, status, waitlist position) in the listed order."""
        response = await self.client.get(
            f"/api/events/{event_id}/attendees", params={"limit": 100}, headers=person.auth if person else {}
        )
        assert response.status_code == 200, response.text
        return [(a["user_id"], a["status"], a["waitlist_position"]) for a in response.json()["items"]]


def event_body(group_id: str, **fields: Any) -> dict[str, Any]:
    starts = soon()
    body: dict[str, Any] = {
        "group_id": group_id,
        "title": "Evening run",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "timezone": "Europe/Berlin",
        "venue": {"name": "Tiergarten", "address": "Strasse des 17. Juni", "location": {"lat": 52.514, "lng": 13.35}},
    }
    body.update(fields)
    return body


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EventsApi]:
    """One Gatherly for a whole test module (its tests run in the module's event loop:
    `pytestmark = pytest.mark.asyncio(loop_scope="module")`). Tests on it make their own groups and events."""
    async with running_gatherly(
        tmp_path_factory.mktemp("events") / "data", database_backend=request.param, **FAST_SETTINGS
    ) as running:
        yield EventsApi(running)
