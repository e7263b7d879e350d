"""The sender of each channel's sends: claims due sends with a lease (a batch of as many as it sends at once, the
batch's leases renewed together while they are sent), delivers them through the channel's circuit breaker, records
the batch's outcomes in one transaction, retries failures with doubling waits a bounded number of times, and
records what still fails (listed and retried by `gatherly notifications failed|retry`). A send is never dropped
while there is someone to send it to, and a sender records a send only while it holds its lease."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from prometheus_client import Counter

from gatherly.kernel.resilience import CircuitOpen
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import OutboxSignal
from gatherly.notifications.domain import Channel
from gatherly.notifications.store import Delivery, DeliveryStore, Stores

log = structlog.get_logger(__name__)

# Outcomes of send attempts: sent | retry (failed, tried again later) | gave_up (recorded as failed) |
# postponed (the channel's circuit is open: not an attempt) | dropped (nobody to send to any more) |
# lease_lost (the lease ran out mid-send and another sender took the send over: it is that sender's to record).
SENDS = Counter("gatherly_notification_sends_total", "Notification send attempts by outcome", ["channel", "outcome"])

CIRCUIT_OPEN_WAIT = timedelta(seconds=1)
# Sends in flight at once (one batch): enough to keep a mail server or push service busy, few enough not to look
# like a flood. It is also the most a crash can leave sent but unrecorded (sent again after the restart).
CONCURRENCY = 10
# Leases are renewed this many times per lease length while their sends are in progress.
RENEWALS_PER_LEASE = 3
DROPPED_REASON = "nobody to send to any more"


@dataclass
class _Leases:
    """A claimed batch's leases as this sender holds them: the lease end it last set (the same for the whole batch,
    claimed and renewed together), and the sends whose lease another sender took over."""

    until: datetime
    ids: list[str]
    lost: set[str] = field(default_factory=set)

    @property
    def held(self) -> list[str]:
        return [key for key in self.ids if key not in self.lost]


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
        """Send everything due now, a batch at a time; returns how many were delivered."""
        delivered = 0
        while True:
            claimed = await self._claim()
            if not claimed:
                return delivered
            delivered += await self._send_batch(claimed)
            if len(claimed) < CONCURRENCY:
                return delivered

    async def _claim(self) -> list[Delivery]:
        async with self.context.db.writing() as session:
            now = self.context.clock.now()
            return await Stores(session).deliveries.claim_due(self.channel, now, self.lease, CONCURRENCY)

    async def _send_batch(self, claimed: Sequence[Delivery]) -> int:
        # claim_due returns the lease end as each send's next attempt (one claim: the same for all of them).
        leases = _Leases(claimed[0].next_attempt_at, [delivery.id for delivery in claimed])
        finished = asyncio.Event()
        renewing = asyncio.create_task(self._keep_leased(leases, finished))
        try:
            outcomes = await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        finally:
            finished.set()
            await renewing  # ends after any renewal in progress, so `leases` is what the database holds
        return await self._record(list(zip(claimed, outcomes, strict=True)), leases)

    async def _deliver(self, delivery: Delivery) -> bool | Exception:
        """The adapter's answer, or what it raised (the circuit open, or any failure of the channel)."""
        resilience = self.context.platform.resilience
        try:
            return await resilience.call(circuit_of(self.channel), lambda: self.adapter.deliver(delivery), attempts=1)
        except Exception as error:  # SMTP refusal, network, a push service's 5xx: the send is kept
            return error

    async def _keep_leased(self, leases: _Leases, finished: asyncio.Event) -> None:
        """Renews the batch's leases until its sends are finished, so a slow send is not taken over (and sent
        twice)."""
        interval = self.lease.total_seconds() / RENEWALS_PER_LEASE
        while leases.held:
            try:
                await asyncio.wait_for(finished.wait(), interval)
                return
            except TimeoutError:
                pass
            until = self.context.clock.now() + self.lease
            try:
                async with self.context.db.writing() as session:
                    held = await Stores(session).deliveries.renew(leases.held, leases.until, until)
            except Exception as error:  # the database away for a moment: try again; the leases may still hold
                log.warning("notification send leases not renewed", sends=len(leases.held), error=repr(error))
                continue
            leases.lost.update(key for key in leases.held if key not in held)
            leases.until = until

    async def _record(self, outcomes: Sequence[tuple[Delivery, bool | Exception]], leases: _Leases) -> int:
        """Records the batch's outcomes in one transaction, each only if this sender still holds its lease; returns
        how many were recorded as sent."""
        now = self.context.clock.now()
        held = [(delivery, outcome) for delivery, outcome in outcomes if delivery.id not in leases.lost]
        sent = [d.id for d, outcome in held if outcome is True]
        dropped = [d.id for d, outcome in held if outcome is False]
        # Not an attempt: the channel is resting after failures. Look again shortly; the breaker lets a trial call
        # through once its time is up.
        postponed = [d.id for d, outcome in held if isinstance(outcome, CircuitOpen)]
        failed = [(d, o) for d, o in held if isinstance(o, Exception) and not isinstance(o, CircuitOpen)]
        recorded: dict[str, str] = {}
        if held:
            async with self.context.db.writing() as session:
                store = Stores(session).deliveries
                for key in await store.sent(sent, leases.until, now):
                    recorded[key] = "sent"
                for key in await store.dropped(dropped, leases.until, DROPPED_REASON):
                    recorded[key] = "dropped"
                for key in await store.postpone(postponed, leases.until, now + CIRCUIT_OPEN_WAIT):
                    recorded[key] = "postponed"
                for delivery, error in failed:
                    if (outcome := await self._failed(store, delivery, leases.until, error)) is not None:
                        recorded[delivery.id] = outcome
        for delivery, _ in outcomes:
            outcome = recorded.get(delivery.id, "lease_lost")
            if outcome == "lease_lost":
                log.warning("notification send lease lost; another sender owns the send", delivery=delivery.id)
            SENDS.labels(self.channel.value, outcome).inc()
        return sum(1 for outcome in recorded.values() if outcome == "sent")

    async def _failed(self, store: DeliveryStore, delivery: Delivery, held: datetime, error: Exception) -> str | None:
        """One more failed attempt, retried later or given up; the outcome, or None when the lease was lost."""
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
        if not await store.failed(delivery.id, held, repr(error), retry_at=retry_at):
            return None
        return "retry" if retry_at is not None else "gave_up"

    async def _seconds_until_next(self) -> float:
        async with self.context.db.read_connection() as connection:
            next_due = await Stores(connection).deliveries.next_due_at(self.channel)
        if next_due is None:
            return self.poll_interval
        until = (next_due - self.context.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, until))
