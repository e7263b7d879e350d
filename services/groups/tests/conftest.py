"""Fixtures of the groups service's tests: a whole Gatherly with cheap password hashes (the tests sign many
people up through the real HTTP flow; hashing cost is the users service's business, not ours)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gatherly.app.testing import FAST_SETTINGS, ApiHelpers, Person, RunningGatherly, running_gatherly
from gatherly.groups.store import Stores, reading
from gatherly.kernel.testing import DB_BACKENDS


@pytest.fixture(params=DB_BACKENDS)
async def gatherly(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningGatherly]:
    """All five services in-process on fresh SQLite files and an embedded log (overrides the root fixture
    only to make password hashing cheap)."""
    async with running_gatherly(tmp_path / "data", database_backend=request.param, **FAST_SETTINGS) as running:
        yield running


# --- helpers every groups test uses (a fixture hands them out: test modules do not import each other) -------------


@dataclass
class GroupsApi(ApiHelpers):
    """Thin helpers over the HTTP API, asserting the status of each step that is setup, not the point of a test."""

    async def create(self, organizer: Person, **fields: Any) -> dict[str, Any]:
        body = {"name": "Berlin Hikers", **fields}
        response = await self.client.post("/api/groups", json=body, headers=organizer.auth)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def join(self, person: Person, group_id: str, answers: Sequence[str] = ()) -> str:
        response = await self.client.post(
            f"/api/groups/{group_id}/join", json={"answers": list(answers)}, headers=person.auth
        )
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        return status

    async def approve(self, manager: Person, group_id: str, person: Person) -> None:
        response = await self.client.post(
            f"/api/groups/{group_id}/requests/{person.user_id}/approve", headers=manager.auth
        )
        assert response.status_code == 200, response.text

    async def set_role(self, manager: Person, group_id: str, person: Person, role: str) -> None:
        response = await self.client.put(
            f"/api/groups/{group_id}/members/{person.user_id}/role", json={"role": role}, headers=manager.auth
        )
        assert response.status_code == 200, response.text

    async def ban(self, manager: Person, group_id: str, person: Person) -> None:
        response = await self.client.delete(
            f"/api/groups/{group_id}/members/{person.user_id}", params={"ban": "true"}, headers=manager.auth
        )
        assert response.status_code == 204, response.text

    async def get(self, group_id: str, person: Person | None = None) -> dict[str, Any]:
        response = await self.client.get(f"/api/groups/{group_id}", headers=person.auth if person else {})
        assert response.status_code == 200, response.text
        group: dict[str, Any] = response.json()
        return group

    async def members(self, group_id: str, person: Person | None = None) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"/api/groups/{group_id}/members", params={"limit": 100}, headers=person.auth if person else {}
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    @asynccontextmanager
    async def stores(self) -> AsyncIterator[Stores]:
        """The groups service's own tables, for what HTTP cannot show (rows of a deleted group, saga state)."""
        async with reading(self.running.process.host("groups").context.db) as stores:
            yield stores

    async def cast(self, people: dict[str, Person], **fields: Any) -> Cast:
        """An approval group (one question) founded by people["organizer"], everyone else in their named relation."""
        organizer = people["organizer"]
        group = await self.create(
            organizer, join_policy="approval", questions=["Why do you want to join?"], **{"name": "Cast", **fields}
        )
        group_id = group["id"]
        for role in ("co_organizer", "event_organizer", "member", "banned"):
            await self.join(people[role], group_id, ANSWERS)
            await self.approve(organizer, group_id, people[role])
        await self.set_role(organizer, group_id, people["co_organizer"], "co_organizer")
        await self.set_role(organizer, group_id, people["event_organizer"], "event_organizer")
        await self.ban(organizer, group_id, people["banned"])
        await self.join(people["pending"], group_id, ANSWERS)
        response = await self.client.post(f"/api/groups/{group_id}/invitations", json={}, headers=organizer.auth)
        assert response.status_code == 201, response.text
        return Cast(group, people, invitation_id=response.json()["id"])


ANSWERS = ["I love walking"]


@dataclass
class Cast:
    """A group with one person in every relation to it (the authorization matrix's rows)."""

    group: dict[str, Any]
    people: dict[str, Person]
    invitation_id: str  # a link invitation the organizer made

    @property
    def id(self) -> str:
        return str(self.group["id"])


CAST_ROLES = ("organizer", "co_organizer", "event_organizer", "member", "pending", "banned", "outsider")


@pytest.fixture
def api(gatherly: RunningGatherly) -> GroupsApi:
    return GroupsApi(gatherly)


@pytest.fixture
def make_cast(api: GroupsApi) -> Callable[..., Awaitable[Cast]]:
    async def make(**fields: Any) -> Cast:
        people = dict(zip(CAST_ROLES, await api.people(*CAST_ROLES), strict=True))
        return await api.cast(people, **fields)

    return make


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def shared_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GroupsApi]:
    """One Gatherly for a whole test module (its tests must run in the module's event loop:
    `pytestmark = pytest.mark.asyncio(loop_scope="module")`). Tests on it make their own groups. A module may
    name the services to run in `SERVICES` (default: all five)."""
    async with running_gatherly(
        tmp_path_factory.mktemp("groups") / "data",
        getattr(request.module, "SERVICES", None),
        database_backend=request.param,
        **FAST_SETTINGS,
    ) as running:
        yield GroupsApi(running)
