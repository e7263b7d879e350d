"""Logging in through HTTP: one answer for every failure, lockout timing, rate limits and rehashing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import extract_parameters
from sqlalchemy import select

from gatherly.app.testing import RunningGatherly, running_gatherly, sign_up
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.settings import Settings
from gatherly.users.crypto import Passwords
from gatherly.users.service import Identity
from gatherly.users.tables import accounts

from .conftest import CHEAP_HASHES  # type: ignore[import-not-found]

WRONG = "not the password at all"

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _log_in(users: RunningGatherly, email: str, password: str, **headers: str) -> Any:
    return await users.client.post("/api/auth/login", json={"email": email, "password": password}, headers=headers)


def _identity(users: RunningGatherly) -> Identity:
    identity: Identity = users.process.host("users").context.extras["identity"]
    return identity


async def test_an_unknown_email_and_a_wrong_password_get_the_very_same_answer(users: RunningGatherly) -> None:
    person = await sign_up(users)
    wrong_password = await _log_in(users, person.email, WRONG)
    unknown_email = await _log_in(users, "nobody@example.org", WRONG)
    malformed_email = await _log_in(users, "nobody", WRONG)
    for response in (wrong_password, unknown_email, malformed_email):
        assert response.status_code == 401
        assert response.json() == wrong_password.json()
        assert response.headers["www-authenticate"] == "Bearer"


async def test_an_unknown_email_still_costs_a_password_hash(
    users: RunningGatherly, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = _identity(users)
    checked: list[str] = []
    original = identity.passwords._matches

    def counting(stored_hash: str, password: str) -> bool:
        checked.append(stored_hash)
        return original(stored_hash, password)

    monkeypatch.setattr(identity.passwords, "_matches", counting)
    await _log_in(users, "nobody@example.org", WRONG)
    assert len(checked) == 1 and checked[0].startswith("$argon2id$")


async def test_five_failures_lock_the_account_for_a_second_then_doubling_even_for_the_right_password(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    person = await sign_up(users)
    for _ in range(4):
        assert (await _log_in(users, person.email, WRONG)).status_code == 401
    assert (await _log_in(users, person.email, WRONG)).status_code == 401  # the 5th failure locks

    locked = await _log_in(users, person.email, person.password)
    assert locked.status_code == 429 and locked.headers["retry-after"] == "1"
    assert locked.headers["content-type"] == "application/problem+json"

    clock.advance(timedelta(seconds=1))
    assert (await _log_in(users, person.email, WRONG)).status_code == 401  # the 6th failure: 2 s
    assert (await _log_in(users, person.email, person.password)).headers["retry-after"] == "2"
    clock.advance(timedelta(seconds=1))
    assert (await _log_in(users, person.email, person.password)).headers["retry-after"] == "1"
    clock.advance(timedelta(seconds=1))

    assert (await _log_in(users, person.email, person.password)).status_code == 200
    # A success resets the count: four more failures do not lock.
    for _ in range(4):
        assert (await _log_in(users, person.email, WRONG)).status_code == 401
    assert (await _log_in(users, person.email, person.password)).status_code == 200


async def test_the_lockout_grows_to_at_most_fifteen_minutes(users: RunningGatherly, clock: FrozenClock) -> None:
    person = await sign_up(users)
    waits: list[int] = []
    while len(waits) < 12:
        response = await _log_in(users, person.email, WRONG)
        if response.status_code == 429:
            waits.append(int(response.headers["retry-after"]))
            clock.advance(timedelta(seconds=waits[-1]))
        else:
            assert response.status_code == 401
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]


async def test_an_address_without_an_account_locks_the_same_way(users: RunningGatherly, clock: FrozenClock) -> None:
    person = await sign_up(users)
    answers = {}
    for email in (person.email, "nobody@example.org"):
        for _ in range(5):
            await _log_in(users, email, WRONG)
        locked = await _log_in(users, email, WRONG)
        answers[email] = (locked.status_code, locked.headers["retry-after"], locked.json())
    assert answers[person.email] == answers["nobody@example.org"]
    assert answers[person.email][0] == 429


async def test_a_hash_made_with_weaker_parameters_is_upgraded_at_login(users: RunningGatherly) -> None:
    person = await sign_up(users)
    stronger = Settings(**{**CHEAP_HASHES, "password_time_cost": 2, "password_memory_kib": 16})
    _identity(users).passwords = Passwords(stronger)

    assert (await _log_in(users, person.email, person.password)).status_code == 200
    async with users.process.host("users").context.db.read_session() as session:
        stored = await session.scalar(select(accounts.c.password_hash).where(accounts.c.id == person.user_id))
    assert stored is not None
    parameters = extract_parameters(stored)
    assert (parameters.time_cost, parameters.memory_cost) == (2, 16)
    assert (await _log_in(users, person.email, person.password)).status_code == 200


async def test_login_attempts_are_limited_per_client_address(tmp_path: Path) -> None:
    async with running_gatherly(
        tmp_path / "data", services=["users"], login_limit_per_minute=3, trusted_proxy_hops=1, **CHEAP_HASHES
    ) as users:
        for _ in range(3):
            response = await _log_in(users, "ann@example.org", WRONG, **{"X-Forwarded-For": "203.0.113.7"})
            assert response.status_code == 401
        limited = await _log_in(users, "bob@example.org", WRONG, **{"X-Forwarded-For": "203.0.113.7"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another address is not held up; a forged left-hand entry does not help the first one.
        assert (
            await _log_in(users, "bob@example.org", WRONG, **{"X-Forwarded-For": "198.51.100.1"})
        ).status_code == 401
        spoofed = await _log_in(users, "bob@example.org", WRONG, **{"X-Forwarded-For": "10.9.9.9, 203.0.113.7"})
        assert spoofed.status_code == 429


async def test_the_login_limit_holds_across_processes_of_the_service(tmp_path: Path) -> None:
    # Two processes of the users service on one database (replicas): the tokens a client spent on one are spent on
    # the other too, since the buckets are rows, not process memory.
    settings = {"services": ["users"], "login_limit_per_minute": 3, "trusted_proxy_hops": 1, **CHEAP_HASHES}
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    async with running_gatherly(tmp_path / "one", **settings) as one:
        for _ in range(2):
            assert (await _log_in(one, "ann@example.org", WRONG, **forwarded)).status_code == 401
        async with running_gatherly(tmp_path / "two", database_url=one.settings.database_url, **settings) as two:
            assert (await _log_in(two, "ann@example.org", WRONG, **forwarded)).status_code == 401
            refused = await _log_in(two, "ann@example.org", WRONG, **forwarded)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert (await _log_in(one, "ann@example.org", WRONG, **forwarded)).status_code == 429


async def test_sign_ups_are_limited_per_client_address(tmp_path: Path) -> None:
    async with running_gatherly(
        tmp_path / "data", services=["users"], signup_limit_per_minute=2, **CHEAP_HASHES
    ) as users:
        body = {"password": "a long enough passphrase", "display_name": "Ann"}
        for n in range(2):
            response = await users.client.post("/api/auth/signup", json={**body, "email": f"p{n}@example.org"})
            assert response.status_code == 202
        limited = await users.client.post("/api/auth/signup", json={**body, "email": "p3@example.org"})
        assert limited.status_code == 429 and "retry-after" in limited.headers
