"""The delivery runtime: at-least-once consumption made idempotent by the inbox, bounded retries, dead letters."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import stamina
import structlog
from pydantic import ValidationError
from sqlalchemy import delete

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel.db import Database, rowcount
from gatherly.kernel.log.base import LogConsumer, MessageLog, OutgoingMessage, Record, TopicPartition
from gatherly.kernel.messages import Envelope, UnknownEventType, causation_id_var, correlation_id_var
from gatherly.kernel.metrics import DEAD_LETTERS, HANDLE_LATENCY, HANDLED
from gatherly.kernel.uow import INBOX, UnitOfWork

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=IntegrationEvent)
U = TypeVar("U", bound=UnitOfWork)
Handler = Callable[[Any, Any], Awaitable[None]]

DLQ_SUFFIX = ".dlq"


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


@dataclass
class ConsumerSpec:
    """One consumer group: the event types it reacts to and the handler of each."""

    group: str
    handlers: dict[str, Handler] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)


class ConsumerRegistry:
    """Collects a service's handlers. Each group keeps its own offsets, so one read model can be rebuilt
    (or can fail) without touching the others.

        consumers = ConsumerRegistry()

        @consumers.on(UserProfileUpdated, group="groups.profiles")
        async def keep_profiles(event: UserProfileUpdated, uow: GroupsUnitOfWork) -> None: ...

    A handler's effects go through its unit of work only (rows, outbox events, queued mail), because a
    handler may run more than once before its transaction commits (a failed batch is retried per record).
    """

    def __init__(self) -> None:
        self.specs: dict[str, ConsumerSpec] = {}

    def on(
        self, *events: type[IntegrationEvent], group: str
    ) -> Callable[[Callable[[E, U], Awaitable[None]]], Callable[[E, U], Awaitable[None]]]:
        def register(handler: Callable[[E, U], Awaitable[None]]) -> Callable[[E, U], Awaitable[None]]:
            spec = self.specs.setdefault(group, ConsumerSpec(group))
            for event in events:
                if event.TYPE in spec.handlers:
                    raise ValueError(f"{group} already handles {event.TYPE}")
                spec.handlers[event.TYPE] = handler
                spec.topics.add(event.TOPIC)
            return handler

        return register


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_delay: float = 0.1
    max_delay: float = 5.0


class ConsumerWorker:
    """Runs one consumer group: poll, apply each record in its own transaction with the inbox row, commit offsets.

    Offsets are committed only after the records' transactions committed; a crash in between redelivers
    them and the inbox turns the repeat into a no-op. A handler that keeps failing (or a message that
    cannot be parsed) is parked on `<topic>.dlq` with the error, so the partition moves on."""

    def __init__(
        self,
        spec: ConsumerSpec,
        message_log: MessageLog,
        uow_factory: Callable[[], UnitOfWork],
        *,
        retry: RetryPolicy | None = None,
        batch_size: int = 200,
    ) -> None:
        self.spec = spec
        self.log = message_log
        self.uow_factory = uow_factory
        self.retry = retry or RetryPolicy()
        self.batch_size = batch_size
        self._stopping = asyncio.Event()
        self._consumer: LogConsumer | None = None

    def stop(self) -> None:
        """Finish the record in hand, commit, leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = self.log.consumer(self.spec.group, sorted(self.spec.topics))
        self._consumer = consumer
        try:
            while not self._stopping.is_set():
                records = await consumer.poll(self.batch_size, timeout=0.5)
                if not records:
                    continue
                await self.handle_batch(records)
                done: dict[TopicPartition, int] = {}
                for record in records:
                    done[TopicPartition(record.topic, record.partition)] = record.offset + 1
                await consumer.commit(done)
        finally:
            await consumer.close()

    async def handle_batch(self, records: Sequence[Record]) -> None:
        """Apply records in order. A transaction costs milliseconds, so a batch is first tried in ONE
        transaction (an inbox row per message); if anything in it fails, it is rolled back whole and every
        record goes through `handle` alone, with retries and dead letters."""
        parsed: list[tuple[Envelope, IntegrationEvent, Handler]] = []
        for record in records:
            try:
                envelope = Envelope.from_record(record)
                handler = self.spec.handlers.get(envelope.type)
                if handler is None:
                    continue
                parsed.append((envelope, envelope.event(), handler))
            except (KeyError, ValueError, ValidationError, UnknownEventType):
                break  # let the one-by-one path park it, keeping order with the rest
        else:
            if len(parsed) > 1:
                try:
                    await self._apply_all(parsed)
                    return
                except Exception as error:
                    log.info(
                        "batch failed; applying its records one by one", consumer=self.spec.group, error=repr(error)
                    )
        for record in records:
            await self.handle(record)

    async def _apply_all(self, parsed: Sequence[tuple[Envelope, IntegrationEvent, Handler]]) -> None:
        applied: list[Envelope] = []
        async with self.uow_factory() as uow:
            seen = await uow.processed_among(self.spec.group, [envelope.id for envelope, _, _ in parsed])
            for envelope, event, handler in parsed:
                if envelope.id in seen:
                    continue
                seen.add(envelope.id)  # the log may hold the same message twice in one batch
                correlation = correlation_id_var.set(envelope.correlation_id)
                causation = causation_id_var.set(envelope.id)
                try:
                    await handler(event, uow)
                finally:
                    correlation_id_var.reset(correlation)
                    causation_id_var.reset(causation)
                applied.append(envelope)
            await uow.mark_processed(self.spec.group, *(envelope.id for envelope in applied))
        duplicates = len(parsed) - len(applied)
        if duplicates:
            HANDLED.labels(self.spec.group, "duplicate").inc(duplicates)
        for envelope in applied:
            self._record_success(envelope)

    async def handle(self, record: Record) -> None:
        try:
            envelope = Envelope.from_record(record)
            handler = self.spec.handlers.get(envelope.type)
            if handler is None:
                return  # another consumer's business: skipped, and its offset committed
            event = envelope.event()
        except (KeyError, ValueError, ValidationError, UnknownEventType) as error:
            # Retrying cannot fix a message that does not parse: park it at once.
            await self.park(record, error, attempts=1)
            return
        attempts = 0
        try:
            async for attempt in stamina.retry_context(
                on=Exception,
                attempts=self.retry.max_attempts,
                wait_initial=self.retry.initial_delay,
                wait_max=self.retry.max_delay,
                timeout=None,
            ):
                with attempt:
                    attempts = attempt.num
                    await self._apply(envelope, event, handler)
        except Exception as error:
            await self.park(record, error, attempts=attempts)

    async def _apply(self, envelope: Envelope, event: IntegrationEvent, handler: Handler) -> None:
        correlation = correlation_id_var.set(envelope.correlation_id)
        causation = causation_id_var.set(envelope.id)
        try:
            async with self.uow_factory() as uow:
                if await uow.already_processed(self.spec.group, envelope.id):
                    HANDLED.labels(self.spec.group, "duplicate").inc()
                    return
                await handler(event, uow)
                await uow.mark_processed(self.spec.group, envelope.id)
        finally:
            correlation_id_var.reset(correlation)
            causation_id_var.reset(causation)
        self._record_success(envelope)

    def _record_success(self, envelope: Envelope) -> None:
        HANDLED.labels(self.spec.group, "ok").inc()
        HANDLE_LATENCY.labels(self.spec.group).observe(
            max(0.0, (datetime.now(UTC) - envelope.occurred_at).total_seconds())
        )

    async def park(self, record: Record, error: BaseException, attempts: int) -> None:
        log.error(
            "message parked on the dead-letter topic",
            consumer=self.spec.group,
            topic=record.topic,
            offset=record.offset,
            error=repr(error),
        )
        headers = {
            **record.headers,
            "dlq.consumer_group": self.spec.group,
            "dlq.original_topic": record.topic,
            "dlq.original_partition": str(record.partition),
            "dlq.original_offset": str(record.offset),
            "dlq.error_type": type(error).__name__,
            "dlq.error": str(error)[:2000],
            "dlq.stacktrace": "".join(traceback.format_exception(error))[-4000:],
            "dlq.attempts": str(attempts),
            "dlq.failed_at": datetime.now(UTC).isoformat(),
        }
        await self.log.publish(
            [
                OutgoingMessage(
                    topic=dead_letter_topic(record.topic), key=record.key, value=record.value, headers=headers
                )
            ]
        )
        DEAD_LETTERS.labels(self.spec.group, record.topic).inc()
        HANDLED.labels(self.spec.group, "dead_letter").inc()


async def replay_dead_letters(message_log: MessageLog, topic: str, *, group: str | None = None) -> int:
    """Publish parked messages of `<topic>.dlq` back to `topic` (same message id; consumers that had applied
    them skip them via their inbox). Progress is kept as a replay group's offsets,
    so each is replayed once.
    With `group`, only the messages that this consumer group parked. Returns how many were replayed."""
    dlq = dead_letter_topic(topic)
    replay_group = f"gatherly.dlq-replay.{group or 'all'}"
    consumer = message_log.consumer(replay_group, [dlq])
    replayed = 0
    try:
        while True:
            records = await consumer.poll(500, timeout=0.5)
            if not records:
                break
            out: list[OutgoingMessage] = []
            done: dict[TopicPartition, int] = {}
            for record in records:
                done[TopicPartition(record.topic, record.partition)] = record.offset + 1
                if group is not None and record.headers.get("dlq.consumer_group") != group:
                    continue
                headers = {k: v for k, v in record.headers.items() if not k.startswith("dlq.")}
                headers["replayed_from"] = f"{record.topic}:{record.partition}:{record.offset}"
                out.append(OutgoingMessage(topic=topic, key=record.key, value=record.value, headers=headers))
            if out:
                await message_log.publish(out)
                replayed += len(out)
            await consumer.commit(done)
    finally:
        await consumer.close()
    return replayed


def topics_of(specs: Sequence[ConsumerSpec]) -> set[str]:
    return {topic for spec in specs for topic in spec.topics}


async def forget_processed(db: Database, group: str) -> None:
    """Delete a consumer group's inbox rows, so a replay from the beginning applies every message again."""
    async with db.writing() as session:
        await session.execute(delete(INBOX).where(INBOX.c.consumer == group))


async def prune_inbox(db: Database, older_than: timedelta) -> int:
    """Forget inbox rows older than the log keeps messages: such a message can no longer be delivered again."""
    async with db.writing() as session:
        result = await session.execute(delete(INBOX).where(INBOX.c.processed_at < datetime.now(UTC) - older_than))
    return rowcount(result)
