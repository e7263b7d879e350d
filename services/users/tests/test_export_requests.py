"""Asking for a data export through HTTP (the users service alone, so no export finishes): one at a time per person,
also when requests come at the same moment, and at most GATHERLY_EXPORTS_PER_PERSON_PER_DAY in any 24 hours."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from gatherly.app.testing import Person, RunningGatherly, sign_up
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.sagas import SAGAS
from gatherly.users.domain import DATA_EXPORT

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEADLINE = timedelta(hours=1)  # GATHERLY_EXPORT_DEADLINE_SECONDS's default: past it, an export is no longer made


async def _ask(users: RunningGatherly, person: Person) -> Any:
    return await users.client.post("/api/users/me/export", headers=person.auth)


async def _exports_of(users: RunningGatherly, person: Person) -> int:
    db = users.process.host("users").context.db
    async with db.read_connection() as connection:
        rows = (await connection.execute(SAGAS.select().where(SAGAS.c.kind == DATA_EXPORT))).mappings().all()
    return sum(1 for row in rows if row["data"]["user_id"] == person.user_id)


async def test_requests_at_the_same_moment_make_one_export(users: RunningGatherly) -> None:
    person = await sign_up(users)
    answers = await asyncio.gather(*(_ask(users, person) for _ in range(8)))
    assert {answer.status_code for answer in answers} == {202}, [answer.text for answer in answers]
    assert len({answer.json()["export_id"] for answer in answers}) == 1
    assert await _exports_of(users, person) == 1


async def test_a_person_may_start_three_exports_a_day_and_is_told_when_the_next(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    person, other = await sign_up(users), await sign_up(users)
    started = []
    for _ in range(3):
        first = await _ask(users, person)
        assert first.status_code == 202, first.text
        again = await _ask(users, person)  # while it is being made: the same one
        assert again.json()["export_id"] == first.json()["export_id"]
        started.append(first.json()["export_id"])
        clock.advance(DEADLINE)
    assert len(set(started)) == 3

    refused = await _ask(users, person)
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "3 data exports in 24 hours" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) == (timedelta(days=1) - 3 * DEADLINE).total_seconds()
    assert (await _ask(users, other)).status_code == 202  # the limit is each person's own
    assert await _exports_of(users, person) == 3

    clock.advance(timedelta(days=1) - 3 * DEADLINE)  # the first leaves the 24 hours
    assert (await _ask(users, person)).status_code == 202
