"""The sender of each channel's sends: claims due sends with a lease (only as many as it sends at once, renewed while
they are sent), delivers them through the channel's circuit breaker, retries failures with doubling waits a bounded
number of times, and records what still fails (listed and retried by `gatherly notifications failed|retry`). A send
is never dropped while there is someone to send it to, and a sender records a send only while it holds its lease."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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

_Change = Callable[[Stores, datetime], Awaitable[bool]]

# Outcomes of send attempts: sent | retry (failed, tried again later) | gave_up (recorded as failed) |
# postponed (the channel's circuit is open: not an attempt) | dropped (nobody to send to any more) |
# lease_lost (the lease ran out mid-send and another sender took the send over: it is that sender's to record).
SENDS = Counter("gatherly_notification_sends_total", "Notification send attempts by outcome", ["channel", "outcome"])

CIRCUIT_OPEN_WAIT = timedelta(seconds=1)
# Sends in flight at once: enough to keep a mail server or push service busy, few enough not to look like a flood.
# Only these are claimed at a time, so no claimed send waits its lease away behind the others.
CONCURRENCY = 10
# Leases are renewed this many times per lease length while their sends are in progress.
RENEWALS_PER_LEASE = 3


@dataclass
class _Lease:
    """A claimed send's lease as this sender holds it: the lease end it last set, or lost to another sender."""

    until: datetime
    lost: bool = False


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
            if len(claimed) < CONCURRENCY:
                return delivered

    async def _claim(self) -> list[Delivery]:
        async with self.context.db.writing() as session:
            now = self.context.clock.now()
            return await Stores(session).deliveries.claim_due(self.channel, now, self.lease, CONCURRENCY)

    async def _send(self, delivery: Delivery) -> int:
        lease = _Lease(delivery.next_attempt_at)  # claim_due returns the lease end as the send's next attempt
        finished = asyncio.Event()
        renewing = asyncio.create_task(self._keep_leased(delivery.id, lease, finished))
        try:
            outcome = await self._deliver(delivery)
        finally:
            finished.set()
            await renewing  # ends after any renewal in progress, so `lease` is what the database holds
        return await self._record_outcome(delivery, lease, outcome)

    async def _deliver(self, delivery: Delivery) -> bool | CircuitOpen | Exception:
        """The adapter's answer, or what it raised (the circuit open, or any failure of the channel)."""
        resilience = self.context.platform.resilience
        try:
            return await resilience.call(circuit_of(self.channel), lambda: self.adapter.deliver(delivery), attempts=1)
        except Exception as error:  # SMTP refusal, network, a push service's 5xx: the send is kept
            return error

    async def _record_outcome(self, delivery: Delivery, lease: _Lease, outcome: bool | Exception) -> int:
        if isinstance(outcome, CircuitOpen):
            # Not an attempt: the channel is resting after failures. Look again shortly; the breaker lets a
            # trial call through once its time is up.
            retry_at = self.context.clock.now() + CIRCUIT_OPEN_WAIT
            await self._record(
                delivery, lease, "postponed", lambda s, held: s.deliveries.postpone(delivery.id, held, retry_at)
            )
            return 0
        if isinstance(outcome, Exception):
            await self._failed(delivery, lease, outcome)
            return 0
        if not outcome:
            reason = "nobody to send to any more"
            await self._record(
                delivery, lease, "dropped", lambda s, held: s.deliveries.dropped(delivery.id, held, reason)
            )
            return 0
        now = self.context.clock.now()
        return int(
            await self._record(delivery, lease, "sent", lambda s, held: s.deliveries.sent(delivery.id, held, now))
        )

    async def _keep_leased(self, delivery_id: str, lease: _Lease, finished: asyncio.Event) -> None:
        """Renews the lease until the send is finished, so a slow send is not taken over (and sent twice)."""
        interval = self.lease.total_seconds() / RENEWALS_PER_LEASE
        while not lease.lost:
            try:
                await asyncio.wait_for(finished.wait(), interval)
                return
            except TimeoutError:
                pass
            until = self.context.clock.now() + self.lease
            try:
                async with self.context.db.writing() as session:
                    held = await Stores(session).deliveries.renew(delivery_id, lease.until, until)
            except Exception as error:  # the database away for a moment: try again; the lease may still hold
                log.warning("notification send lease not renewed", delivery=delivery_id, error=repr(error))
                continue
            if held:
                lease.until = until
            else:
                lease.lost = True

    async def _failed(self, delivery: Delivery, lease: _Lease, error: Exception) -> None:
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
        await self._record(
            delivery,
            lease,
            "retry" if retry_at is not None else "gave_up",
            lambda s, held: s.deliveries.failed(delivery.id, held, repr(error), retry_at=retry_at),
        )

    async def _record(self, delivery: Delivery, lease: _Lease, outcome: str, change: _Change) -> bool:
        """Records the outcome if this sender still holds the send's lease; True when it did."""
        recorded = False
        if not lease.lost:
            async with self.context.db.writing() as session:
                recorded = await change(Stores(session), lease.until)
        if not recorded:
            log.warning("notification send lease lost; another sender owns the send", delivery=delivery.id)
            outcome = "lease_lost"
        self._count(outcome)
        return recorded

    def _count(self, outcome: str) -> None:
        SENDS.labels(self.channel.value, outcome).inc()

    async def _seconds_until_next(self) -> float:
        async with self.context.db.read_connection() as connection:
            next_due = await Stores(connection).deliveries.next_due_at(self.channel)
        if next_due is None:
            return self.poll_interval
        until = (next_due - self.context.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, until))
