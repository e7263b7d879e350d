"""Sends that fail: bounded retries with backoff, then recorded as failed; the email channel's circuit breaker opens
after repeated failures and, while open, postpones sends without spending their attempts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from gatherly.app.testing import running_gatherly, sign_up
from gatherly.kernel.testing import DB_BACKENDS
from gatherly.notifications.sending import SENDS
from gatherly.notifications.store import DeliveryStatus, reading

FAST: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 8,
    "password_parallelism": 1,
    "signup_limit_per_minute": 0,
    "login_limit_per_minute": 0,
    "notification_retry_initial_delay": 0.05,
    "notification_retry_max_delay": 0.1,
    "notification_poll_interval": 0.1,
}


class BrokenMailer:
    """A mail server that is down: every send raises, and is counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, message: EmailMessage) -> None:
        self.calls += 1
        raise ConnectionRefusedError("mail server down")


def _count(outcome: str) -> float:
    return SENDS.labels("email", outcome)._value.get()


async def _until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        await asyncio.sleep(0.05)


async def _announcements(running: Any, count: int) -> None:
    olga = await sign_up(running, display_name="Olga")
    ann = await sign_up(running, display_name="Ann")
    group_id = (await running.client.post("/api/groups", json={"name": "Choir"}, headers=olga.auth)).json()["id"]
    await running.client.post(f"/api/groups/{group_id}/join", json={}, headers=ann.auth)
    await running.settle()
    running.process.platform.mailer = BrokenMailer()  # only now: the sign-ups' own emails went out
    for n in range(count):
        sent = await running.client.post(
            f"/api/groups/{group_id}/announcements", json={"subject": f"N{n}", "body": "."}, headers=olga.auth
        )
        assert sent.status_code == 202
    await running.settle()


async def _statuses(running: Any) -> dict[str, int]:
    async with reading(running.process.host("notifications").context.db) as stores:
        return {s: await stores.deliveries.count(s) for s in (DeliveryStatus.PENDING, DeliveryStatus.FAILED)}


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_failing_send_is_retried_a_bounded_number_of_times_then_recorded(
    tmp_path: Path, database_backend: str
) -> None:
    # Three attempts each, and a breaker that never opens here: the retries themselves are the point.
    async with running_gatherly(
        tmp_path, database_backend=database_backend, notification_send_attempts=3, **FAST
    ) as running:
        running.process.platform.resilience.breakers.default_threshold = 1000
        gave_up = _count("gave_up")
        await _announcements(running, 2)
        await _until(lambda: _has(running, failed=2), "both sends recorded as failed")
        assert running.process.platform.mailer.calls == 6, "three attempts each, no more"
        assert _count("gave_up") - gave_up == 2
        async with reading(running.process.host("notifications").context.db) as stores:
            failed = await stores.deliveries.failed_ones(10)
        assert {d.attempts for d in failed} == {3}
        assert all("mail server down" in (d.last_error or "") for d in failed)


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_an_open_circuit_postpones_sends_without_spending_their_attempts(
    tmp_path: Path, database_backend: str
) -> None:
    # Attempts to spare: no send gives up before the breaker (5 failures) opens, however the sends interleave.
    async with running_gatherly(
        tmp_path, database_backend=database_backend, notification_send_attempts=20, **FAST
    ) as running:
        postponed = _count("postponed")
        await _announcements(running, 8)
        await _until(lambda: _postponed_since(postponed, 1), "the circuit open")
        mailer = running.process.platform.mailer
        calls = mailer.calls
        # Three more rounds over every send while the breaker stays open (30 s): the mailer is not called again.
        await _until(lambda: _postponed_since(postponed, 25), "three rounds of postponing")
        assert mailer.calls == calls, "the open circuit kept the mailer from being called"
        assert calls <= 8 + 5
        assert await _statuses(running) == {DeliveryStatus.PENDING: 8, DeliveryStatus.FAILED: 0}
        async with reading(running.process.host("notifications").context.db) as stores:
            pending = await stores.deliveries.with_status(DeliveryStatus.PENDING, 100)
        assert sum(d.attempts for d in pending) == calls, "only real calls spent attempts"


async def _has(running: Any, failed: int) -> bool:
    return (await _statuses(running))[DeliveryStatus.FAILED] == failed


async def _postponed_since(before: float, at_least: int) -> bool:
    return _count("postponed") - before >= at_least
