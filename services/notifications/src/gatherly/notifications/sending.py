"""The sender of each channel's sends: claims due sends with a lease, delivers them through the channel's circuit
breaker, retries failures with doubling waits a bounded number of times, and records what still fails (listed and
retried by `gatherly notifications failed|retry`). A send is never dropped while there is someone to send it to."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from prometheus_client import Counter

from gatherly.kernel.resilience import CircuitOpen
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import OutboxSignal
from gatherly.notifications.domain import Channel
from gatherly.notifications.store import Delivery, Stores

log = structlog.get_logger(__name__)

_Change = Callable[[Stores], Awaitable[None]]

# Outcomes of send attempts: sent | retry (failed, tried again later) | gave_up (recorded as failed) |
# postponed (the channel's circuit is open: not an attempt) | dropped (nobody to send to any more).
SENDS = Counter("gatherly_notification_sends_total", "Notification send attempts by outcome", ["channel", "outcome"])

BATCH = 100
CIRCUIT_OPEN_WAIT = timedelta(seconds=1)
# Sends in flight at once: enough to keep a mail server or push service busy, few enough not to look like a flood.
CONCURRENCY = 10


class ChannelAdapter(Protocol):
    async def deliver(self, delivery: Delivery) -> bool:
        """True when delivered, False when there is nobody to deliver to any more; raises on failure."""
        ...


def circuit_of(channel: Channel) -> str:
    """Each channel's circuit breaker (the kernel's SMTP adapter has its own around each connection too)."""
    return f"notifications.{channel.value}"


def retry_delay(attempts: int, initial: float, longest: float) -> timedelta:
    """Doubling per failed attempt, capped."""
    return timedelta(seconds=min(longest, initial * 2 ** min(attempts, 30)))


class Sender:
    """Delivers one channel's due sends through its adapter."""

    def __init__(
        self, context: ServiceContext, channel: Channel, adapter: ChannelAdapter, signal: OutboxSignal
    ) -> None:
        self.context = context
        self.channel = channel
        self.adapter = adapter
        self.signal = signal
        settings = context.settings
        self.attempts = settings.notification_send_attempts
        self.initial_delay = settings.notification_retry_initial_delay
        self.longest_delay = settings.notification_retry_max_delay
        self.poll_interval = settings.notification_poll_interval
        self.lease = timedelta(seconds=settings.notification_send_lease_seconds)
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> None:
        """Until cancelled: send what is due, then sleep until woken by a commit, the next retry, or the poll.
        A failing round raises: the host's supervisor logs it and restarts the sender with backoff."""
        while True:
            await self.send_due()
            await self.signal.wait(await self._seconds_until_next())

    async def send_due(self) -> int:
        """Send everything due now; returns how many were delivered."""
        delivered = 0
        while True:
            claimed = await self._claim()
            if not claimed:
                return delivered
            results = await asyncio.gather(*(self._send(delivery) for delivery in claimed))
            delivered += sum(results)
            if len(claimed) < BATCH:
                return delivered

    async def _claim(self) -> list[Delivery]:
        async with self.context.db.writing() as session:
            now = self.context.clock.now()
            return await Stores(session).deliveries.claim_due(self.channel, now, self.lease, BATCH)

    async def _send(self, delivery: Delivery) -> int:
        async with self._slots:
            resilience = self.context.platform.resilience
            try:
                delivered = await resilience.call(
                    circuit_of(self.channel), lambda: self.adapter.deliver(delivery), attempts=1
                )
            except CircuitOpen:
                # Not an attempt: the channel is resting after failures. Look again shortly; the breaker lets a
                # trial call through once its time is up.
                retry_at = self.context.clock.now() + CIRCUIT_OPEN_WAIT
                await self._record(lambda s: s.deliveries.postpone(delivery.id, retry_at))
                self._count("postponed")
                return 0
            except Exception as error:
                # Whatever the channel raised (SMTP refusal, network, a push service's 5xx), the send is kept.
                await self._failed(delivery, error)
                return 0
            if not delivered:
                await self._record(lambda s: s.deliveries.dropped(delivery.id, "nobody to send to any more"))
                self._count("dropped")
                return 0
            await self._record(lambda s: s.deliveries.sent(delivery.id, self.context.clock.now()))
            self._count("sent")
            return 1

    async def _failed(self, delivery: Delivery, error: Exception) -> None:
        attempts = delivery.attempts + 1
        retry_at: datetime | None = None
        if attempts < self.attempts:
            retry_at = self.context.clock.now() + retry_delay(delivery.attempts, self.initial_delay, self.longest_delay)
        log.warning(
            "notification not delivered",
            delivery=delivery.id,
            attempts=attempts,
            gave_up=retry_at is None,
            error=repr(error),
        )
        await self._record(lambda s: s.deliveries.failed(delivery.id, repr(error), retry_at=retry_at))
        self._count("retry" if retry_at is not None else "gave_up")

    def _count(self, outcome: str) -> None:
        SENDS.labels(self.channel.value, outcome).inc()

    async def _record(self, change: _Change) -> None:
        async with self.context.db.writing() as session:
            await change(Stores(session))

    async def _seconds_until_next(self) -> float:
        async with self.context.db.read_session() as session:
            next_due = await Stores(session).deliveries.next_due_at(self.channel)
        if next_due is None:
            return self.poll_interval
        until = (next_due - self.context.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, until))
