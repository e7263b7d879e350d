"""Deleting one's account through HTTP: the saga's id and status, what ends at once, what is erased, the other
services' replies (counted once each; the deletion completes only when all four and the erasure here are in), and a
deletion that does not finish in time (failed, naming who did not answer; a late reply does not revive it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from gatherly.app.testing import Person, RunningGatherly, mail_to, sign_up, wait_for_mail
from gatherly.contracts.users import UserDeleted, UserDeletionStepDone, UserExportArchiveReady
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.messages import Envelope
from gatherly.users import service
from gatherly.users.domain import ACCOUNT_DELETED, ExportStatus
from gatherly.users.store import UsersUnitOfWork, reading, unit_of_work
from gatherly.users.tables import mail_outbox

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


PARTICIPANTS = ("groups", "events", "notifications", "images")


async def _reply(
    users: RunningGatherly, person: Person, deletion_id: str, *services: str, user_id: str | None = None
) -> None:
    """The other services' `user_deletion.step_done`, put on the log as they would, then let the saga take them."""
    now = datetime.now(UTC)
    replies = [  # a millisecond apart, in the order given
        UserDeletionStepDone(
            user_id=user_id or person.user_id,
            deletion_id=deletion_id,
            service=name,
            what={"rows": 1},
            done_at=now + timedelta(milliseconds=position),
        )
        for position, name in enumerate(services)
    ]
    await users.process.platform.log.publish([Envelope.wrap(reply, now).to_message() for reply in replies])
    await users.settle()


async def _deleted_and_answered(users: RunningGatherly, person: Person, published: Published) -> str:
    """Delete the account and have all four services answer: the deletion's id."""
    deletion_id: str = (await _delete(users, person)).json()["deletion_id"]
    await published("user.deleted", user_id=person.user_id)
    await _reply(users, person, deletion_id, *PARTICIPANTS)
    return deletion_id


async def _account_row(users: RunningGatherly, person: Person) -> Any:
    async with reading(users.process.host("users").context.db) as stores:
        return await stores.accounts.credentials_by_id(person.user_id)


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
    assert (deleted.user_id, deleted.deletion_id) == (person.user_id, response.json()["deletion_id"])
    status = await _deletion(users, person)
    assert status.status_code == 200 and status.json() == {"status": "pending", "reason": None, "answered": ["users"]}
    await _reply(users, person, deleted.deletion_id, *PARTICIPANTS)
    done = {"status": "completed", "reason": None, "answered": ["users", *PARTICIPANTS]}
    assert (await _deletion(users, person)).json() == done

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

    assert (await _deletion(users, person)).json() == {"status": "pending", "reason": None, "answered": []}
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

    await _reply(users, person, first, *PARTICIPANTS)  # everyone else answered; the erasure here is what is late
    clock.advance(timedelta(minutes=59))
    await housekeeping()
    assert (await _deletion(users, person)).json()["status"] == "pending"
    clock.advance(timedelta(minutes=1))
    await housekeeping()
    failed = (await _deletion(users, person)).json()
    assert failed["status"] == "failed" and "no answer from users." in failed["reason"]

    monkeypatch.undo()  # the erasing step works again
    second = await _delete(users, person)
    assert second.status_code == 202 and second.json()["deletion_id"] != first
    await published("user.deleted", user_id=person.user_id)
    await _reply(users, person, second.json()["deletion_id"], *PARTICIPANTS)
    assert (await _deletion(users, person)).json()["status"] == "completed"
    assert (await users.client.get(f"/api/users/{person.user_id}")).status_code == 404


async def test_a_deletion_status_needs_a_token_and_a_deletion(users: RunningGatherly) -> None:
    person = await sign_up(users)
    assert (await users.client.delete("/api/users/me")).status_code == 401
    assert (await users.client.get("/api/users/me/deletion")).status_code == 401
    never = await _deletion(users, person)
    assert never.status_code == 404 and never.headers["content-type"] == "application/problem+json"


# --- the other services' replies ------------------------------------------------------------------------------------


async def test_each_service_is_counted_once_and_the_deletion_completes_only_when_all_have_answered(
    users: RunningGatherly, published: Published
) -> None:
    person = await sign_up(users)
    deletion_id = (await _delete(users, person)).json()["deletion_id"]
    await published("user.deleted", user_id=person.user_id)  # the account is erased here meanwhile

    await _reply(users, person, deletion_id, "groups", "events", "notifications")
    await _reply(users, person, deletion_id, "groups", "groups", "events")  # redeliveries
    progress = (await _deletion(users, person)).json()
    assert progress == {"status": "pending", "reason": None, "answered": ["users", "groups", "events", "notifications"]}

    await _reply(users, person, deletion_id, "images")
    progress = (await _deletion(users, person)).json()
    assert progress == {"status": "completed", "reason": None, "answered": ["users", *PARTICIPANTS]}


async def test_the_deletion_completes_only_once_the_account_itself_is_erased(
    users: RunningGatherly, monkeypatch: pytest.MonkeyPatch, published: Published
) -> None:
    _erasure_lost(monkeypatch)
    person = await sign_up(users)
    deletion_id = await _deleted_and_answered(users, person, published)
    assert (await _deletion(users, person)).json() == {"status": "pending", "reason": None, "answered": [*PARTICIPANTS]}
    assert await _account_row(users, person) is not None  # not erased yet

    monkeypatch.undo()
    (message,) = await published("user.deleted", user_id=person.user_id)
    uow = unit_of_work(users.process.host("users").context)
    async with uow:  # the step, run again (as a redelivery would)
        await service.erase_account(uow, message)
    progress = (await _deletion(users, person)).json()
    assert progress == {"status": "completed", "reason": None, "answered": [*PARTICIPANTS, "users"]}
    assert deletion_id == message.deletion_id
    assert await _account_row(users, person) is None


async def test_an_overdue_deletion_fails_naming_who_did_not_answer_and_a_late_reply_changes_nothing(
    users: RunningGatherly, clock: FrozenClock, published: Published
) -> None:
    person = await sign_up(users)
    deletion_id = (await _delete(users, person)).json()["deletion_id"]
    await published("user.deleted", user_id=person.user_id)
    await _reply(users, person, deletion_id, "groups", "notifications")

    clock.advance(timedelta(hours=1))
    with capture_logs() as logs:
        await service.fail_overdue_deletions(unit_of_work(users.process.host("users").context))
    failed = (await _deletion(users, person)).json()
    assert failed["status"] == "failed"
    assert "no answer from events, images." in failed["reason"]
    [line] = [entry for entry in logs if entry["event"] == "account deletion failed"]
    assert (line["log_level"], line["deletion_id"], line["missing"]) == ("error", deletion_id, ["events", "images"])

    await _reply(users, person, deletion_id, "events", "images")
    late = (await _deletion(users, person)).json()
    assert (late["status"], late["reason"]) == ("failed", failed["reason"])
    assert late["answered"] == ["users", "groups", "notifications", "events", "images"]  # kept for the record


async def test_replies_that_name_no_such_deletion_or_service_or_someone_else_are_ignored(
    users: RunningGatherly, published: Published
) -> None:
    person, other = await sign_up(users), await sign_up(users)
    deletion_id = (await _delete(users, person)).json()["deletion_id"]
    await published("user.deleted", user_id=person.user_id)

    await _reply(users, person, deletion_id, "payments", "users", "GROUPS", "groups\x00")
    await _reply(users, person, deletion_id, *PARTICIPANTS, user_id=other.user_id)  # another person's id
    await _reply(users, person, str(uuid.uuid4()), *PARTICIPANTS)
    await _reply(users, person, "no-such\x00deletion", "groups")
    await _reply(users, person, "9" * 100_000, "groups")
    await _reply(users, person, deletion_id.upper(), "groups")  # not the id as this service wrote it
    assert (await _deletion(users, person)).json() == {"status": "pending", "reason": None, "answered": ["users"]}
    assert await users.process.platform.log.read("user_deletion.dlq", limit=10) == []


async def test_the_deadline_is_the_setting(users: RunningGatherly, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users.settings, "account_deletion_deadline_seconds", 90.0)
    person = await sign_up(users)
    deletion_id = (await _delete(users, person)).json()["deletion_id"]
    async with reading(users.process.host("users").context.db) as stores:
        deletion = await stores.deletions.get(deletion_id)
        saga = await stores.deletions.sagas.get(deletion_id)
    assert deletion is not None and saga is not None and saga.created_at is not None
    assert deletion.deadline_at - saga.created_at == timedelta(seconds=90)


# --- what was under way when the account was deleted ---------------------------------------------------------------


class DownMailer:
    """An SMTP server that refuses everything: queued mail stays in the outbox."""

    attempts = 0

    async def send(self, message: object) -> None:
        self.attempts += 1
        raise ConnectionRefusedError("SMTP server down")


async def _queued_to(users: RunningGatherly) -> list[str]:
    async with users.process.host("users").context.db.read_connection() as connection:
        return list((await connection.execute(select(mail_outbox.c.recipient))).scalars())


async def test_mails_not_yet_sent_to_a_deleted_person_are_never_sent(users: RunningGatherly) -> None:
    person, other = await sign_up(users), await sign_up(users)
    new_address = f"new-{uuid.uuid4().hex[:8]}@example.org"
    real = users.process.platform.mailer
    users.process.platform.mailer = DownMailer()  # the `users` fixture puts the real one back
    for someone in (person, other):
        reset = await users.client.post("/api/auth/password-reset", json={"email": someone.email})
        assert reset.status_code == 202, reset.text
    change = await users.client.post(
        "/api/users/me/email", json={"new_email": new_address, "password": person.password}, headers=person.auth
    )
    assert change.status_code == 202, change.text
    queued = await _queued_to(users)
    assert queued.count(person.email) == 2 and new_address in queued  # the reset link, the change notice; the link

    assert (await _delete(users, person)).status_code == 202
    left = await _queued_to(users)
    assert person.email not in left and new_address not in left
    assert other.email in left  # someone else's mail still goes

    users.process.platform.mailer = real
    mailed = len(mail_to(users.mail_dir, person.email))
    await wait_for_mail(users, other.email, 2)  # the other's reset link went out once the server was back
    assert len(mail_to(users.mail_dir, person.email)) == mailed
    assert mail_to(users.mail_dir, new_address) == []


async def test_an_export_being_made_when_the_account_is_deleted_never_becomes_ready(users: RunningGatherly) -> None:
    person = await sign_up(users)
    asked = await users.client.post("/api/users/me/export", headers=person.auth)
    assert asked.status_code == 202, asked.text
    export_id = asked.json()["export_id"]
    assert (await _delete(users, person)).status_code == 202
    mailed = len(mail_to(users.mail_dir, person.email))

    # The images service wrote the archive before it heard of the deletion (it then deletes it).
    now = datetime.now(UTC)
    ready = UserExportArchiveReady(
        user_id=person.user_id,
        export_id=export_id,
        download_url="https://gatherly.example/media/exports/x.zip",
        expires_at=now + timedelta(days=2),
        size_bytes=1000,
    )
    await users.process.platform.log.publish([Envelope.wrap(ready, now).to_message()])
    await users.settle()

    async with reading(users.process.host("users").context.db) as stores:
        export = await stores.exports.get(export_id)
    assert export is not None
    assert (export.status, export.reason, export.download_url) == (ExportStatus.FAILED, ACCOUNT_DELETED, None)
    assert len(mail_to(users.mail_dir, person.email)) == mailed
