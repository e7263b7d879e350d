"""The users service's mail outbox: emails are written with the change, sent promptly, retried, never dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from gatherly.app.testing import RunningGatherly, mail_to, running_gatherly, wait_for_mail
from gatherly.kernel.mail import Mailer
from gatherly.users.store import reading
from gatherly.users.tables import mail_outbox

from .conftest import CHEAP_HASHES  # type: ignore[import-not-found]


def _sign_up_as(email: str) -> dict[str, str]:
    return {"email": email, "password": "a long enough passphrase", "display_name": "Ann"}


# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


class FlakyMailer:
    """Fails `failures` times, then hands messages to the real mailer."""

    def __init__(self, real: Mailer, failures: int) -> None:
        self.real = real
        self.failures_left = failures
        self.attempts = 0

    async def send(self, message: EmailMessage) -> None:
        self.attempts += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionRefusedError("SMTP server down")
        await self.real.send(message)


async def _outbox(users: RunningGatherly) -> list[tuple[int, str | None]]:
    async with users.process.host("users").context.db.read_session() as session:
        rows = (await session.execute(select(mail_outbox.c.attempts, mail_outbox.c.last_error))).all()
    return [(row.attempts, row.last_error) for row in rows]


async def _until(condition_met: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for a condition (checked every 20 ms), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await condition_met():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_an_email_that_fails_to_send_is_retried_until_it_goes_out(users: RunningGatherly) -> None:
    flaky = FlakyMailer(users.process.platform.mailer, failures=3)
    users.process.platform.mailer = flaky
    assert (await users.client.post("/api/auth/signup", json=_sign_up_as("ann@example.org"))).status_code == 202

    (message,) = await wait_for_mail(users, "ann@example.org")
    assert message["Subject"] == "Confirm your email address"
    assert flaky.attempts == 4
    await _until(lambda: _empty(users))


async def _empty(users: RunningGatherly) -> bool:
    async with reading(users.process.host("users").context.db) as stores:
        return await stores.mail.pending() == 0


async def test_while_the_mailer_is_down_the_email_waits_in_the_outbox_with_its_error(users: RunningGatherly) -> None:
    real = users.process.platform.mailer
    flaky = FlakyMailer(real, failures=10**9)
    users.process.platform.mailer = flaky
    await users.client.post("/api/auth/signup", json=_sign_up_as("bob@example.org"))

    async def failed_twice() -> bool:
        rows = await _outbox(users)
        return bool(rows) and rows[0][0] >= 2

    await _until(failed_twice)
    ((_, error),) = await _outbox(users)
    assert "SMTP server down" in (error or "")
    assert mail_to(users.mail_dir, "bob@example.org") == []

    flaky.failures_left = 0  # the server is back
    await wait_for_mail(users, "bob@example.org")
    await _until(lambda: _empty(users))


async def test_an_email_goes_out_right_after_the_commit_not_at_the_next_poll(tmp_path: Path) -> None:
    async with running_gatherly(tmp_path / "data", services=["users"], mail_poll_interval=60, **CHEAP_HASHES) as users:
        started = time.monotonic()
        await users.client.post("/api/auth/signup", json=_sign_up_as("cat@example.org"))
        await wait_for_mail(users, "cat@example.org", timeout=5)
        assert time.monotonic() - started < 5
