"""Deleting one's account through HTTP: the saga's id and status, what ends at once, what is erased, and a
deletion that does not finish in time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from gatherly.app.testing import Person, RunningGatherly, mail_to, sign_up, wait_for_mail
from gatherly.contracts.users import UserDeleted
from gatherly.kernel.clock import FrozenClock
from gatherly.users import service
from gatherly.users.store import UsersUnitOfWork, reading, unit_of_work

Published = Callable[..., Awaitable[list[Any]]]
LinkInMail = Callable[..., Awaitable[str]]

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _delete(users: RunningGatherly, person: Person) -> Any:
    return await users.client.delete("/api/users/me", headers=person.auth)


async def _deletion(users: RunningGatherly, person: Person) -> Any:
    return await users.client.get("/api/users/me/deletion", headers=person.auth)


async def _log_in(users: RunningGatherly, email: str, password: str) -> Any:
    return await users.client.post("/api/auth/login", json={"email": email, "password": password})


async def _refresh(users: RunningGatherly, refresh_token: str) -> Any:
    return await users.client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


async def _mail_sent(users: RunningGatherly, timeout: float = 10.0) -> None:
    """Wait until the mail outbox is empty: everything queued so far has been written out."""
    deadline = time.monotonic() + timeout
    while True:
        async with reading(users.process.host("users").context.db) as stores:
            if await stores.mail.pending() == 0:
                return
        assert time.monotonic() < deadline, "mail still queued"
        await asyncio.sleep(0.02)


def _erasure_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The users service's erasing step never happens (as if its message sat on the dead-letter topic)."""

    async def lost(uow: UsersUnitOfWork, event: UserDeleted) -> None:
        return None

    monkeypatch.setattr(service, "erase_account", lost)


async def test_deleting_my_account_starts_a_saga_that_erases_it(users: RunningGatherly, published: Published) -> None:
    person = await sign_up(users, display_name="Ann")
    other = await sign_up(users)

    response = await _delete(users, person)
    assert response.status_code == 202
    assert set(response.json()) == {"deletion_id"}
    uuid.UUID(response.json()["deletion_id"])

    (deleted,) = await published("user.deleted", user_id=person.user_id)  # settles: the saga has run its step
    assert deleted.user_id == person.user_id
    status = await _deletion(users, person)
    assert status.status_code == 200 and status.json() == {"status": "completed", "reason": None}

    assert (await users.client.get(f"/api/users/{person.user_id}")).status_code == 404
    me = await users.client.get("/api/users/me", headers=person.auth)
    assert (me.status_code, me.headers["content-type"]) == (
        401,
        "application/problem+json",
    )  # the token's account is gone
    assert (await _refresh(users, person.refresh_token)).status_code == 401
    unknown = await _log_in(users, "nobody@example.org", person.password)
    gone = await _log_in(users, person.email, person.password)
    assert (gone.status_code, gone.json()) == (401, unknown.json())
    # Nobody else is touched.
    assert (await users.client.get(f"/api/users/{other.user_id}")).status_code == 200
    assert (await _refresh(users, other.refresh_token)).status_code == 200


async def test_the_address_of_a_deleted_account_can_sign_up_afresh(
    users: RunningGatherly, published: Published
) -> None:
    person = await sign_up(users)
    await _delete(users, person)
    await published("user.deleted", user_id=person.user_id)
    again = await users.client.post(
        "/api/auth/signup", json={"email": person.email, "password": person.password, "display_name": "Ann again"}
    )
    assert again.status_code == 202
    messages = await wait_for_mail(users, person.email, count=2)
    assert messages[-1]["Subject"] == "Confirm your email address"  # not "You already have an account"


async def test_while_the_deletion_is_pending_sessions_and_password_are_dead_and_asking_again_changes_nothing(
    users: RunningGatherly, monkeypatch: pytest.MonkeyPatch, published: Published, link_in_mail: LinkInMail
) -> None:
    _erasure_lost(monkeypatch)
    person = await sign_up(users)
    await users.client.post("/api/auth/password-reset", json={"email": person.email})
    reset_link = await link_in_mail(person.email, "reset-password", count=2)
    deletion_id = (await _delete(users, person)).json()["deletion_id"]
    await published("user.deleted", user_id=person.user_id)

    assert (await _deletion(users, person)).json() == {"status": "pending", "reason": None}
    assert (await _refresh(users, person.refresh_token)).status_code == 401
    assert (await _log_in(users, person.email, person.password)).status_code == 401
    # No way back in through a reset link, old or new.
    reset = {"token": reset_link, "password": "a brand new passphrase"}
    assert (await users.client.post("/api/auth/password-reset/confirm", json=reset)).status_code == 400
    assert (await users.client.post("/api/auth/password-reset", json={"email": person.email})).status_code == 202
    await _mail_sent(users)
    assert len(mail_to(users.mail_dir, person.email)) == 2  # the confirmation and the first reset only
    again = await _delete(users, person)
    assert (again.status_code, again.json()) == (202, {"deletion_id": deletion_id})
    assert len(await published("user.deleted", user_id=person.user_id)) == 1


async def test_a_deletion_not_finished_in_time_fails_and_may_be_asked_for_again(
    users: RunningGatherly, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, published: Published
) -> None:
    _erasure_lost(monkeypatch)
    person = await sign_up(users)
    first = (await _delete(users, person)).json()["deletion_id"]
    await published("user.deleted", user_id=person.user_id)

    async def housekeeping() -> None:
        await service.fail_overdue_deletions(unit_of_work(users.process.host("users").context))

    clock.advance(timedelta(minutes=59))
    await housekeeping()
    assert (await _deletion(users, person)).json()["status"] == "pending"
    clock.advance(timedelta(minutes=1))
    await housekeeping()
    failed = (await _deletion(users, person)).json()
    assert failed["status"] == "failed" and "could not be erased" in failed["reason"]

    monkeypatch.undo()  # the erasing step works again
    second = await _delete(users, person)
    assert second.status_code == 202 and second.json()["deletion_id"] != first
    await published("user.deleted", user_id=person.user_id)
    assert (await _deletion(users, person)).json() == {"status": "completed", "reason": None}
    assert (await users.client.get(f"/api/users/{person.user_id}")).status_code == 404


async def test_a_deletion_status_needs_a_token_and_a_deletion(users: RunningGatherly) -> None:
    person = await sign_up(users)
    assert (await users.client.delete("/api/users/me")).status_code == 401
    assert (await users.client.get("/api/users/me/deletion")).status_code == 401
    never = await _deletion(users, person)
    assert never.status_code == 404 and never.headers["content-type"] == "application/problem+json"
