"""Two senders of one channel: a send that takes longer than its lease is not taken over (the lease is renewed while
it is sent), and a sender whose lease was taken over anyway records nothing (the send is the other sender's).

The service's own senders run in the background of every test: the sends here are due an hour from now and the
tests' senders live an hour ahead, so only they ever find them due. (With the sends due now, the service's push
sender could claim one between its queueing and the test's first claim, and the test then waited forever for a
delivery that never came.)"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gatherly.app.testing import running_gatherly
from gatherly.kernel.clock import Clock
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.testing import DB_BACKENDS
from gatherly.kernel.uow import OutboxSignal
from gatherly.notifications.domain import Channel, UserId
from gatherly.notifications.sending import Sender
from gatherly.notifications.store import Delivery, DeliveryStatus, Stores, reading

AHEAD = timedelta(hours=1)


@dataclass(frozen=True)
class AheadClock:
    """The service's clock, an hour ahead."""

    clock: Clock

    def now(self) -> datetime:
        return self.clock.now() + AHEAD


def _ahead(context: ServiceContext) -> ServiceContext:
    """The notifications service's context as the tests' senders see it: everything shared but the clock."""
    return replace(context, platform=replace(context.platform, clock=AheadClock(context.clock)))


async def _until_delivering(started: asyncio.Event, sender: asyncio.Task[int]) -> None:
    """Until the sender's channel has started a delivery; fails at once if the sender ends without one."""
    delivering = asyncio.create_task(started.wait())
    await asyncio.wait({delivering, sender}, return_when=asyncio.FIRST_COMPLETED)
    delivering.cancel()
    assert started.is_set(), f"the sender found nothing to send (it returned {sender.result()!r})"


class SlowChannel:
    """A channel whose every delivery takes `seconds` (a slow SMTP server), counting the deliveries it made."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.delivered: Counter[str] = Counter()

    async def deliver(self, delivery: Delivery) -> bool:
        self.started.set()
        await asyncio.sleep(self.seconds)  # the slow server itself, not a wait for something
        self.delivered[delivery.id] += 1
        return True


class HeldChannel:
    """A channel that delivers once the test lets it go."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def deliver(self, delivery: Delivery) -> bool:
        self.started.set()
        await self.release.wait()
        return True


async def _queue(context: Any, count: int) -> list[str]:
    items = [(f"n{i}", UserId(f"u{i}"), Channel.PUSH) for i in range(count)]
    async with context.db.writing() as session:
        await Stores(session).deliveries.add(items, context.clock.now())
    return [f"n{i}:push" for i in range(count)]


def _sender(context: Any, adapter: Any) -> Sender:
    return Sender(context, Channel.PUSH, adapter, OutboxSignal())


async def _statuses(context: Any) -> dict[str, str]:
    async with reading(context.db) as stores:
        rows = []
        for status in (DeliveryStatus.PENDING, DeliveryStatus.SENT):
            rows += await stores.deliveries.with_status(status, 100)
    return {d.id: d.status for d in rows}


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_send_slower_than_its_lease_is_not_taken_over_and_sent_twice(
    tmp_path: Path, database_backend: str
) -> None:
    async with running_gatherly(
        tmp_path, ["notifications"], database_backend=database_backend, notification_send_lease_seconds=0.4
    ) as running:
        context = _ahead(running.process.host("notifications").context)
        ids = await _queue(context, 3)
        channel = SlowChannel(seconds=1.5)  # well over the lease
        first = asyncio.create_task(_sender(context, channel).send_due())
        await _until_delivering(channel.started, first)  # the first sender has claimed them all
        second = _sender(context, channel)
        # The second sender looks for due sends all the while the first one sends (as a second worker polls).
        taken_over = 0
        started = time.monotonic()
        while not first.done():
            taken_over += await second.send_due()
            await asyncio.sleep(0.05)
        assert time.monotonic() - started > 1.0, "the second sender looked past the lease's end"
        assert await first == 3
        assert taken_over == 0
        assert channel.delivered == dict.fromkeys(ids, 1), "each sent once"
        assert await _statuses(context) == dict.fromkeys(ids, DeliveryStatus.SENT)


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_sender_that_lost_its_lease_does_not_mark_the_send_as_its_own(
    tmp_path: Path, database_backend: str
) -> None:
    async with running_gatherly(tmp_path, ["notifications"], database_backend=database_backend) as running:
        context = _ahead(running.process.host("notifications").context)
        [send_id] = await _queue(context, 1)
        held = HeldChannel()
        first = asyncio.create_task(_sender(context, held).send_due())
        await _until_delivering(held.started, first)
        # The first sender stalls past its lease (a process paused, say); another sender takes the send over.
        later = context.clock.now() + 2 * _sender(context, held).lease
        async with context.db.writing() as session:
            [taken] = await Stores(session).deliveries.claim_due(Channel.PUSH, later, _sender(context, held).lease, 10)
        held.release.set()
        assert await first == 0, "the first sender's send is not counted as delivered by it"
        assert await _statuses(context) == {send_id: DeliveryStatus.PENDING}, "still the other sender's to record"
        async with context.db.writing() as session:
            assert await Stores(session).deliveries.sent([send_id], taken.next_attempt_at, later) == {send_id}
        assert await _statuses(context) == {send_id: DeliveryStatus.SENT}
