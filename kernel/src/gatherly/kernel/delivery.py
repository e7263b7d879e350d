"""The delivery runtime: at-least-once consumption made idempotent by the inbox, bounded retries, dead letters."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import traceback
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, TypeVar

import asyncpg
import structlog
from pydantic import ValidationError
from sqlalchemy import bindparam, delete, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite

from gatherly.contracts.base import IntegrationEvent, all_schemas, topic_retention
from gatherly.kernel import inline_sqlite, tracing
from gatherly.kernel.db import Database, delete_in_batches
from gatherly.kernel.frozen import deeply_frozen
from gatherly.kernel.log.base import (
    CommitFailed,
    GroupNotEmpty,
    LogConsumer,
    LogUnavailable,
    MessageLog,
    OutgoingMessage,
    Record,
    TopicConfig,
    TopicPartition,
)
from gatherly.kernel.messages import Envelope, UnknownEventType, causation_id_var, correlation_id_var
from gatherly.kernel.metrics import (
    CONSUMER_LAG,
    DEAD_LETTERS,
    DLQ_SIZE,
    HANDLE_LATENCY,
    HANDLED,
    INFRA_RETRIES,
    UNHANDLED_TYPES,
    observe_all,
)
from gatherly.kernel.uow import INBOX, UnitOfWork

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=IntegrationEvent)
U = TypeVar("U", bound=UnitOfWork)
Handler = Callable[[Any, Any], Awaitable[None]]
BatchHandler = Callable[[Sequence[Any], Any], Awaitable[None]]

DLQ_SUFFIX = ".dlq"
METRICS_EVERY_S = 1.0
# A batch's handlers let the event loop run after this much work: on inline SQLite statements run on the loop's
# thread, and a backlog of 200 records in one transaction held the loop for the whole of it (over 50 ms).
YIELD_EVERY_S = 0.005

# The inbox check and the inbox row in ONE statement: the rows that go in are the messages not applied before
# (a conflicting row is skipped and returns nothing). Built once: building costs more than running it.
CLAIM_INBOX_SQLITE = sqlite.insert(INBOX).on_conflict_do_nothing().returning(INBOX.c.message_id)
CLAIM_INBOX_INLINE = inline_sqlite.DirectInsert(CLAIM_INBOX_SQLITE, ["consumer", "message_id", "processed_at"])
# On PostgreSQL the ids go as ONE array, so the statement's text is the same for every batch size: a row of VALUES
# per message made a new text per size, each prepared (a round trip, and a plan for 3 binds a row) on each pooled
# connection; this one is prepared once per connection. It answers in ONE row, the count of rows it inserted and,
# only when that is short of the ids it was given, the ids it inserted: a row per claimed id (a backlog's poll
# claims them all) went through asyncpg's and SQLAlchemy's result rows for an answer `claim_unprocessed` already
# knows. It goes through SQLAlchemy, not straight to asyncpg: SQLAlchemy's adapter opens the transaction at its first
# statement, so a claim sent to the driver directly would run, and commit, outside the handler's transaction.
CLAIM_INBOX_POSTGRESQL = text(
    "WITH claimed AS (INSERT INTO inbox (consumer, message_id, processed_at)"
    " SELECT :consumer, unnest(CAST(:message_ids AS text[])), CAST(:processed_at AS timestamptz)"
    " ON CONFLICT DO NOTHING RETURNING message_id)"
    " SELECT count(*), CASE WHEN count(*) < :claiming THEN array_agg(message_id) END FROM claimed"
).bindparams(bindparam("processed_at", type_=INBOX.c.processed_at.type))


async def claim_unprocessed(uow: UnitOfWork, consumer: str, message_ids: Sequence[str]) -> set[str]:
    """Write `consumer`'s inbox rows for these messages in the unit of work's transaction; returns the ids that
    were not there yet (to apply now). The others were applied before: a repeat delivery."""
    if not message_ids:
        return set()
    now = uow.clock.now()
    unique = list(dict.fromkeys(message_ids))  # the log may hold the same message twice in one batch
    if not uow.db.is_sqlite:
        claim = {"consumer": consumer, "message_ids": unique, "processed_at": now, "claiming": len(unique)}
        inserted, some = (await uow.session.execute(CLAIM_INBOX_POSTGRESQL, claim)).one()
        # Every id inserted (ids are unique here): all are new. Otherwise the ids inserted (none: no row, NULL).
        return set(unique) if inserted == len(unique) else set(some or ())
    rows = [{"consumer": consumer, "message_id": m, "processed_at": now} for m in unique]
    if uow.db.inline:
        return set(CLAIM_INBOX_INLINE.run(uow.session, rows))
    return set((await uow.session.execute(CLAIM_INBOX_SQLITE, rows)).scalars())


async def _breathe(slice_started: float) -> float:
    """Let the event loop run once `YIELD_EVERY_S` has passed since `slice_started`; returns the new slice's start.
    Safe inside a transaction: this process's other writers wait for the database's write turn, which the unit of
    work holds; readers and other databases go on."""
    if time.perf_counter() - slice_started <= YIELD_EVERY_S:
        return slice_started
    await asyncio.sleep(0)
    return time.perf_counter()


# Records per poll, so at most per transaction. Each transaction's fixed cost (round trips for BEGIN, the claim and
# COMMIT; the commit's fsync) is shared by the records of a poll, so a backlog goes faster in larger polls: 500 ran
# the batch bench at about twice the msg/s of 200, and on PostgreSQL 1,000 went further again, with about 1 µs less
# of our CPU a message (docs/messaging.md). On SQLite a batch holds the database's one write turn for its whole
# transaction, and the process's requests wait for it: 500 there, Kafka's own `max.poll.records` default. A group
# that keeps up polls far fewer at a time. The cost of a larger poll: a batch that fails is applied again record by
# record.
RECORDS_PER_POLL_SQLITE = 500
RECORDS_PER_POLL_POSTGRESQL = 1000


def records_per_poll(db: Database) -> int:
    """How many records a consumer worker whose handlers write to `db` asks for per poll."""
    return RECORDS_PER_POLL_SQLITE if db.is_sqlite else RECORDS_PER_POLL_POSTGRESQL


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


@dataclass
class ConsumerSpec:
    """One consumer group: the event types it reacts to and the handler of each."""

    group: str
    handlers: dict[str, Handler] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    # The types registered with `on_batch`: their handler takes a run of events (`handlers` holds a one-event
    # adapter of it, for the one-by-one path).
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)


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
            self._add(group, events, handler)
            return handler

        return register

    def on_batch(
        self, *events: type[IntegrationEvent], group: str
    ) -> Callable[[Callable[[Sequence[E], U], Awaitable[None]]], Callable[[Sequence[E], U], Awaitable[None]]]:
        """Like `on`, for a handler that applies a run of events at once (one multi-row statement instead of one
        per event: a database round trip per event is what bounds a consumer). It gets the consecutive new events
        of a polled batch that it handles, in log order, inside the batch's transaction; when that batch fails and
        its records go one by one, it gets one event at a time. Its effects must not depend on which events share
        a call. It runs with no per-event correlation or causation id: events it publishes start their own."""

        def register(
            handler: Callable[[Sequence[E], U], Awaitable[None]],
        ) -> Callable[[Sequence[E], U], Awaitable[None]]:
            async def one(event: E, uow: U) -> None:
                await handler([event], uow)

            self._add(group, events, one)
            spec = self.specs[group]
            for event in events:
                spec.batch_handlers[event.TYPE] = handler
            return handler

        return register

    def _add(self, group: str, events: Sequence[type[IntegrationEvent]], handler: Handler) -> None:
        spec = self.specs.setdefault(group, ConsumerSpec(group))
        for event in events:
            if event.TYPE in spec.handlers:
                raise ValueError(f"{group} already handles {event.TYPE}")
            spec.handlers[event.TYPE] = handler
            spec.topics.add(event.TOPIC)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_delay: float = 0.1
    max_delay: float = 5.0


def redelivery_topic(group: str) -> str:
    """Where `gatherly dlq replay` puts a group's parked messages: read by that group only."""
    return f"gatherly.redeliver.{group}"


# --- how long the log keeps each topic ---------------------------------------------------------------------------
# An event topic keeps the log's default (7 days) unless its events declare a shorter retention (personal data:
# `IntegrationEvent.TOPIC_RETENTION`). Its dead-letter topic keeps a parked message until an operator acts, except
# that it keeps no longer than the topic's short retention: such a message is of no use past it, and the personal
# data it carries must not be kept for ever. A group's redelivery topic keeps as long as the shortest of its topics.


def _ms(retention: timedelta) -> int:
    return retention // timedelta(milliseconds=1)


def event_topic(topic: str, partitions: int) -> TopicConfig:
    retention = topic_retention(topic)
    return (
        TopicConfig(topic, partitions=partitions)
        if retention is None
        else TopicConfig(topic, partitions, _ms(retention))
    )


def dead_letter_topic_config(topic: str, partitions: int) -> TopicConfig:
    retention = topic_retention(topic)
    return TopicConfig(dead_letter_topic(topic), partitions, None if retention is None else _ms(retention))


def redelivery_topic_config(group: str, topics: Iterable[str], partitions: int) -> TopicConfig:
    short = [retention for retention in map(topic_retention, topics) if retention is not None]
    return TopicConfig(redelivery_topic(group), partitions, _ms(min(short)) if short else None)


# Headers of a replayed message naming where it first came from (its DLQ is that topic's).
ORIGINAL_TOPIC = "gatherly.original_topic"


# SQLSTATE classes of a database that is unreachable, shutting down, overloaded or asking to retry.
# 55P03 (lock not available) and 57014 (statement timeout) come from a lock or time limit, not from the message.
TRANSIENT_SQLSTATES = ("08", "53", "57P", "40001", "40P01", "55P03", "57014")


def is_infrastructure_error(error: BaseException) -> bool:
    """Whether an error comes from the database or the log being unavailable (locked, down, timed out), not
    from the message or the handler: such errors are retried without limit and never park a message."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(
            seen,
            sa_exc.OperationalError
            | sa_exc.InterfaceError
            | sa_exc.TimeoutError
            | sa_exc.DisconnectionError
            | sqlite3.OperationalError
            | LogUnavailable
            | OSError
            | TimeoutError,
        ):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        # asyncpg's client-side errors after its connection was cut, and PostgreSQL's transient SQLSTATEs.
        if isinstance(seen, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
            return True
        if str(getattr(seen, "sqlstate", "") or "").startswith(TRANSIENT_SQLSTATES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Pause:
    resume_at: float
    failures: int


def read_event(envelope: Envelope) -> IntegrationEvent:
    """The event, read tolerantly: a version newer than this build knows (a newer producer during a rolling
    deploy) is read with the newest schema it has for the type, ignoring the fields it does not know."""
    try:
        return envelope.event()
    except UnknownEventType:
        older = [v for t, v in all_schemas() if t == envelope.type and v < envelope.schema_version]
        if not older:
            raise
        return all_schemas()[(envelope.type, max(older))].model_validate(envelope.payload)


# How many records `ParsedRecords` keeps parsed, and at most how many bytes they hold (`kept_size`): the records a
# process's groups read within a few milliseconds of each other (the embedded log keeps 256 a partition for them).
PARSED_RECORDS = 1024
PARSED_BYTES = 1024 * 1024


def kept_size(record: Record) -> int:
    """What a record holds, as `ParsedRecords` counts it against `max_bytes`: its value's bytes and the length of its
    key and of its headers' names and values (a producer's headers can outweigh a small value)."""
    size = len(record.value) + len(record.key)
    for name, value in record.headers.items():
        size += len(name) + len(value)
    return size


class ParsedRecords:
    """Envelopes, and events of deeply frozen schemas, parsed from records once for every consumer group of a process.

    On the embedded log the groups of a process are handed the same `Record` objects (its kept records,
    kernel/log/embedded.py): after a profile edit three groups each parsed the same record into the same envelope
    (~4-6 µs) and validated the same event (~6-13 µs). An event is shared only when its schema is deeply frozen
    (`frozen.deeply_frozen`: frozen models of immutable values all the way down), so no handler can change what
    another group's handler is given; the envelope is the worker's own (handlers never see it) and frozen. Records are
    known by identity, each kept alive while it is kept here, so no other object can have its id. Kafka's records
    are each group's own, so nothing kept would ever be asked for again: there the process builds it with
    `capacity=0` (app/compose.py), which keeps nothing and parses as before. What fails to parse is not kept: each
    group meets the error itself."""

    def __init__(self, capacity: int = PARSED_RECORDS, max_bytes: int = PARSED_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        # Oldest first. An OrderedDict: taking the first key of a plain dict from which the first ones were deleted
        # walks over their empty slots, up to the table's size, at every eviction.
        # Each with its `kept_size`, so that letting it go takes back what keeping it counted.
        self._parsed: OrderedDict[int, tuple[Record, Envelope, IntegrationEvent | None, int]] = OrderedDict()
        self._bytes = 0
        self._shares: dict[type[IntegrationEvent], bool] = {}

    def envelope(self, record: Record) -> Envelope:
        """`Envelope.from_record(record)`, made once per record."""
        if not self.capacity:
            return Envelope.from_record(record)
        found = self._parsed.get(id(record))
        if found is not None and found[0] is record:
            return found[1]
        envelope = Envelope.from_record(record)
        self._keep(record, envelope)
        return envelope

    def event(self, record: Record, envelope: Envelope) -> IntegrationEvent:
        """`envelope.event()` (raising as it does), validated once per record when its schema is deeply frozen."""
        key = id(record)
        found = self._parsed.get(key)
        if found is None or found[0] is not record or found[1] is not envelope:
            return envelope.event()
        if found[2] is not None:
            return found[2]
        event = envelope.event()
        shares = self._shares.get(type(event))
        if shares is None:
            shares = self._shares[type(event)] = deeply_frozen(type(event))
        if shares:
            self._parsed[key] = (record, envelope, event, found[3])
        return event

    def _keep(self, record: Record, envelope: Envelope) -> None:
        size = kept_size(record)
        if size > self.max_bytes:
            return  # kept, it would push out every other
        parsed = self._parsed
        parsed[id(record)] = (record, envelope, None, size)
        self._bytes += size
        while len(parsed) > self.capacity or self._bytes > self.max_bytes:
            self._bytes -= parsed.popitem(last=False)[1][3]


class ConsumerWorker:
    """Runs one consumer group: poll, apply the records with their inbox rows, commit the offsets.

    A poll's records share ONE transaction when they all succeed; when that fails, each partition's run is tried
    in one transaction, then record by record, each in its own (see `handle_batch`).
    Offsets are committed only after the records' transactions committed; a crash in between redelivers them and
    the inbox turns the repeat into a no-op. Failures are handled per partition, without sleeping in the loop:
    the failing partition is rewound to the failing record and paused for a backoff, while the others go on.

    - Infrastructure errors (database locked or down, log unavailable, timeouts) are retried without limit.
    - A handler error is retried `max_attempts` times, then the record is parked on `<topic>.dlq`.
    - A record that cannot be parsed is parked at once.
    - An event type the group has no handler for is skipped and counted (tolerant reader).
    An error outside a record (poll, commit) ends `run` with the error: the supervisor restarts it."""

    def __init__(
        self,
        spec: ConsumerSpec,
        message_log: MessageLog,
        uow_factory: Callable[[], UnitOfWork],
        *,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        commit_interval: float = 0.05,
        parsed: ParsedRecords | None = None,
    ) -> None:
        self.spec = spec
        self.log = message_log
        self.uow_factory = uow_factory
        self.retry = retry or RetryPolicy()
        # Records per poll, so at most per transaction; None: by the database the units of work write to
        # (`records_per_poll`: 1,000 on PostgreSQL, 500 on SQLite), asked when `run` starts.
        self.batch_size = batch_size
        # Offsets are committed at most this long after their records were applied, not after every poll: a
        # commit is a write transaction on the log, as costly as applying a small batch, and while the group
        # keeps up with single-event transactions each poll brings one record. A crash redelivers what was
        # applied since the last commit; the inbox makes the repeats no-ops.
        self.commit_interval = commit_interval
        # Shared with the process's other groups (ServiceHost): records they were handed too are parsed once.
        self.parsed = parsed if parsed is not None else ParsedRecords()
        self._commit_due: float | None = None
        # A due commit runs beside the poll loop, one at a time: it is a round trip to the log (Kafka's group
        # coordinator), and awaited in the loop it kept the next poll's records waiting (10% of the loop's time at
        # 500 events/s). It carries only offsets of records already applied, so it is as safe as before.
        self._committing: asyncio.Task[None] | None = None
        # Looked up once per worker, not per record: each lookup of a labelled metric takes tens of microseconds.
        self._handled_ok = HANDLED.labels(spec.group, "ok")
        # Skips are most of what many groups do (they read a topic for a few of its types): counted the same way.
        self._skipped = HANDLED.labels(spec.group, "skipped")
        self._unhandled: dict[str, Any] = {}
        self._handle_latency = HANDLE_LATENCY.labels(spec.group)
        self._stopping = asyncio.Event()
        self._consumer: LogConsumer | None = None
        # Next offset to commit per partition: everything before it is applied or parked.
        self._done: dict[TopicPartition, int] = {}
        self._paused: dict[TopicPartition, _Pause] = {}
        self._attempts: dict[tuple[TopicPartition, int], int] = {}
        self._metrics_due = 0.0
        # The lag and DLQ metrics are read from the log in a task of their own: on Kafka that is several round trips
        # (end offsets, a committed offset per partition), and awaited in the poll loop they held every record
        # behind them once a second (p99 34 ms, up to 255 ms at load 5: much of the commit -> consumer tail).
        self._metrics: asyncio.Task[None] | None = None
        # When the poll loop last went round (monotonic), None while not running. A loop that has not gone round
        # for long is stuck (a log or database that hangs rather than fails, a handler that never returns): the
        # supervisor cannot see that, since nothing raised.
        self._last_round: float | None = None

    def stuck_for(self) -> float:
        """Seconds since the poll loop last went round while running (0 when not running)."""
        return 0.0 if self._last_round is None else time.monotonic() - self._last_round

    @property
    def topics(self) -> list[str]:
        return sorted(self.spec.topics | {redelivery_topic(self.spec.group)})

    def stop(self) -> None:
        """Finish the record in hand, commit, leave the group."""
        self._stopping.set()

    async def ensure_topics(self, partitions: int = 4) -> None:
        """Create what this group reads and parks to: its topics, their dead-letter topics (a parked message waits
        for an operator) and its redelivery topic, each kept as long as "how long the log keeps each topic" says."""
        topics = sorted(self.spec.topics)
        await self.log.ensure_topics(
            [event_topic(t, partitions) for t in topics]
            + [dead_letter_topic_config(t, partitions) for t in topics]
            + [redelivery_topic_config(self.spec.group, topics, partitions)]
        )

    async def run(self) -> None:
        await self.ensure_topics()
        self._done.clear()
        self._paused.clear()
        self._commit_due = None
        # The units of work are the only way to their database: one is built for it here, where the size is used,
        # not in the constructor (a worker built and never run builds none).
        batch_size = self.batch_size or records_per_poll(self.uow_factory().db)
        consumer = self.log.consumer(self.spec.group, self.topics, on_revoked=self._commit_revoked)
        # On the embedded log, appends of types this group only skips then wake it late, a run of them at a time.
        consumer.handles = frozenset(self.spec.handlers)
        self._consumer = consumer
        try:
            while not self._stopping.is_set():
                self._last_round = time.monotonic()
                self._resume_due(consumer)
                records = await consumer.poll(batch_size, timeout=self._poll_timeout())
                await self.handle_batch(records)
                await self._commit_when_due(consumer)
                await self._start_metrics(consumer)
            await self._settle_commit()
            await self._commit(consumer, set(self._done))
        finally:
            self._last_round = None
            await self._stop_metrics()
            if self._committing is not None:  # ended by an error: the commit in hand may finish, its error is moot
                await asyncio.gather(self._committing, return_exceptions=True)
                self._committing = None
            try:
                await consumer.close()
            except Exception as error:  # the log is down: our partitions are freed by the session timeout
                log.warning("could not leave the group cleanly", consumer=self.spec.group, error=repr(error))

    async def _start_metrics(self, consumer: LogConsumer) -> None:
        """Start updating the metrics, at most once a second and one update at a time. An update's error ends `run`
        as any error outside a record does (raised here, at the next round after it)."""
        now = time.monotonic()
        if now < self._metrics_due or (self._metrics is not None and not self._metrics.done()):
            return
        if self._metrics is not None:
            self._metrics.result()
        self._metrics_due = now + METRICS_EVERY_S
        # The assignment is asked here, in the loop: the embedded log's consumer may rebalance while answering.
        self._metrics = asyncio.create_task(self._update_metrics(await consumer.assignment()))

    async def _stop_metrics(self) -> None:
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.cancel()  # the worker is ending: an update in hand (or its error) no longer matters
            await asyncio.gather(metrics, return_exceptions=True)

    async def _update_metrics(self, assigned: set[TopicPartition]) -> None:
        """Lag per owned partition and the size of this group's dead-letter topics (read from the log only)."""
        for topic in self.spec.topics:
            ends = await self.log.end_offsets(topic)
            for tp, end in ends.items():
                if tp in assigned:
                    committed = await self.log.committed(self.spec.group, tp) or 0
                    CONSUMER_LAG.labels(self.spec.group, tp.topic, str(tp.partition)).set(max(0, end - committed))
            dlq = dead_letter_topic(topic)
            DLQ_SIZE.labels(dlq).set(sum((await self.log.end_offsets(dlq)).values()))

    async def _commit_when_due(self, consumer: LogConsumer) -> None:
        """Start committing what is done once `commit_interval` has passed since the first record not yet committed
        (and the previous commit has finished). A commit that failed ends `run` here, at the next round."""
        if self._committing is not None and self._committing.done():
            await self._settle_commit()
        if not self._done:
            self._commit_due = None
            return
        now = time.monotonic()
        if self._commit_due is None:
            self._commit_due = now + self.commit_interval
        if now >= self._commit_due and self._committing is None:
            self._committing = asyncio.create_task(self._commit(consumer, set(self._done)))
            self._commit_due = None

    async def _settle_commit(self) -> None:
        """Wait for the commit running beside the loop, if any; raises its error."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    def _poll_timeout(self) -> float:
        # Only pauses still to come count: a resumed partition stays in `_paused` until its record succeeds, and
        # if that record is gone (retention, a lost partition) a past resume time would make every poll return
        # at once, a busy loop. A commit that falls due ends the wait too (while one is still in flight, the first
        # round after it starts the next).
        now = time.monotonic()
        upcoming = [p.resume_at for p in self._paused.values() if p.resume_at > now]
        if self._commit_due is not None and self._committing is None:
            upcoming.append(self._commit_due)
        if not upcoming:
            return 0.5
        return max(0.0, min(0.5, min(upcoming) - now))

    def _resume_due(self, consumer: LogConsumer) -> None:
        now = time.monotonic()
        due = {tp for tp, pause in self._paused.items() if pause.resume_at <= now}
        if due:
            consumer.resume(due)

    async def _commit(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None:
        offsets = {tp: self._done[tp] for tp in partitions if tp in self._done}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailed as error:
            # We lost the partitions (silent too long): their new owner redelivers; the inbox makes it harmless.
            log.warning("offset commit refused: partitions moved on", consumer=self.spec.group, error=str(error))
        for tp in offsets:
            if self._done.get(tp) == offsets[tp]:
                del self._done[tp]

    async def _commit_revoked(self, partitions: set[TopicPartition]) -> None:
        """Commit what was done on partitions we are giving up, so the next owner starts right after it."""
        assert self._consumer is not None
        await self._commit(self._consumer, partitions)
        for tp in partitions:
            self._paused.pop(tp, None)
            self._attempts = {k: v for k, v in self._attempts.items() if k[0] != tp}

    async def handle_batch(self, records: Sequence[Record]) -> None:
        """Apply polled records partition by partition: a failure holds back only its own partition."""
        assert self._consumer is not None
        runs: dict[tuple[str, int], list[Record]] = {}
        for record in records:  # keyed by a plain tuple: a TopicPartition per record cost 0.5 µs
            runs.setdefault((record.topic, record.partition), []).append(record)
        by_partition = {TopicPartition(topic, partition): run for (topic, partition), run in runs.items()}
        # The common case first: the whole poll in one transaction (one commit instead of one per partition).
        if len(by_partition) > 1:
            try:
                whole = await self._try_batch(records)
            except Exception as error:
                whole = False
                log.info("batch failed; applying partition by partition", consumer=self.spec.group, error=repr(error))
            if whole:
                for tp, batch in by_partition.items():
                    self._done[tp] = batch[-1].offset + 1
                    self._paused.pop(tp, None)
                return
        for tp, batch in by_partition.items():
            await self._handle_partition(self._consumer, tp, batch)

    async def _handle_partition(self, consumer: LogConsumer, tp: TopicPartition, records: list[Record]) -> None:
        """Apply one partition's records in order; on a failure rewind to it and pause the partition."""
        try:
            if len(records) > 1 and await self._try_batch(records):
                self._done[tp] = records[-1].offset + 1
                self._paused.pop(tp, None)
                return
        except Exception as error:
            await self._back_off(consumer, tp, records[0], error)
            return
        for record in records:
            try:
                await self.handle(record)
            except Exception as error:
                await self._back_off(consumer, tp, record, error)
                return
            self._done[tp] = record.offset + 1
            self._paused.pop(tp, None)

    async def _back_off(self, consumer: LogConsumer, tp: TopicPartition, record: Record, error: Exception) -> None:
        previous = self._paused.get(tp)
        failures = (previous.failures if previous else 0) + 1
        if is_infrastructure_error(error):
            INFRA_RETRIES.labels(self.spec.group).inc()
            log.warning(
                "database or log unavailable; partition paused, record will be retried",
                consumer=self.spec.group,
                partition=str(tp),
                offset=record.offset,
                error=repr(error),
            )
        delay = min(self.retry.max_delay, self.retry.initial_delay * 2 ** (failures - 1))
        self._paused[tp] = _Pause(time.monotonic() + delay * random.uniform(0.8, 1.0), failures)
        await consumer.seek(tp, record.offset)
        consumer.pause({tp})

    async def _try_batch(self, records: Sequence[Record]) -> bool:
        """A transaction costs milliseconds, so a run of records is first tried in ONE transaction (an inbox row
        per message); if anything in it fails, it is rolled back whole and each record goes alone. Records of types
        the group does not handle are skipped among them, and counted once the rest is applied; a run of nothing
        else needs no transaction (most groups read a topic for a few of its types, and skip the rest by the run)."""
        parsed: list[tuple[Envelope, IntegrationEvent, Handler]] = []
        skipped: list[Record] = []
        for record in records:
            if not self._handles(record):
                skipped.append(record)
                continue
            try:
                envelope = self.parsed.envelope(record)
            except (KeyError, ValueError, ValidationError):
                return False
            handler = self.spec.handlers.get(envelope.type)
            if handler is None:
                return False  # counted on the one-by-one path
            try:
                parsed.append((envelope, self.parsed.event(record, envelope), handler))
            except (ValueError, ValidationError, UnknownEventType):
                return False
        if parsed:
            try:
                await self._apply_all(parsed)
            except Exception as error:
                if is_infrastructure_error(error):
                    raise  # one by one would fail the same way: the partition backs off instead
                log.info("batch failed; applying its records one by one", consumer=self.spec.group, error=repr(error))
                return False
        self._count_skipped(skipped)
        return True

    def _unit_of_work(self) -> UnitOfWork:
        uow = self.uow_factory()
        uow.for_consumer = True  # on the consumers' connections, without the pool's pre-ping (Database.writing)
        return uow

    async def _apply_all(self, parsed: Sequence[tuple[Envelope, IntegrationEvent, Handler]]) -> None:
        applied: list[Envelope] = []
        async with self._unit_of_work() as uow:
            fresh = await claim_unprocessed(uow, self.spec.group, [envelope.id for envelope, _, _ in parsed])
            new: list[tuple[Envelope, IntegrationEvent, Handler]] = []
            for item in parsed:
                if item[0].id in fresh:
                    fresh.discard(item[0].id)  # the log may hold the same message twice in one batch
                    new.append(item)
            slice_started = time.perf_counter()
            # Consecutive events of one batch handler go to it together; the others one at a time, in log order.
            for batch_handler, run in groupby(new, key=lambda item: self.spec.batch_handlers.get(item[0].type)):
                items = list(run)
                if batch_handler is not None:
                    slice_started = await _breathe(slice_started)
                    first = items[0][0]
                    with tracing.handling(self.spec.group, first.type, first.traceparent, first.tracestate):
                        await batch_handler([event for _, event, _ in items], uow)
                    applied += [envelope for envelope, _, _ in items]
                    continue
                for envelope, event, handler in items:
                    slice_started = await _breathe(slice_started)
                    correlation = correlation_id_var.set(envelope.correlation_id)
                    causation = causation_id_var.set(envelope.id)
                    try:
                        with tracing.handling(
                            self.spec.group, envelope.type, envelope.traceparent, envelope.tracestate
                        ):
                            await handler(event, uow)
                    finally:
                        correlation_id_var.reset(correlation)
                        causation_id_var.reset(causation)
                    applied.append(envelope)
        duplicates = len(parsed) - len(applied)
        if duplicates:
            HANDLED.labels(self.spec.group, "duplicate").inc(duplicates)
        self._record_success(applied)

    async def handle(self, record: Record) -> None:
        """Apply one record, or park it when it is poison. Raises (to be retried later) on an infrastructure
        error, or on a handler error while attempts remain."""
        if not self._handles(record):
            self._count_skipped([record])
            return
        tp = TopicPartition(record.topic, record.partition)
        try:
            envelope = self.parsed.envelope(record)
            handler = self.spec.handlers[envelope.type]
            try:
                event = self.parsed.event(record, envelope)
            except UnknownEventType:
                event = read_event(envelope)  # a newer version: read with the newest schema this build has
        except (KeyError, ValueError, ValidationError, UnknownEventType) as error:
            # Retrying cannot fix a message that does not parse: park it at once.
            await self.park(record, error, attempts=1)
            return
        attempt = self._attempts.get((tp, record.offset), 0) + 1
        try:
            await self._apply(envelope, event, handler)
        except Exception as error:
            if is_infrastructure_error(error):
                raise  # not the message's fault: never counted as an attempt, never parked
            if attempt < self.retry.max_attempts:
                self._attempts[(tp, record.offset)] = attempt
                log.info("handler failed; will retry", consumer=self.spec.group, attempt=attempt, error=repr(error))
                raise
            await self.park(record, error, attempts=attempt)
        self._attempts.pop((tp, record.offset), None)

    def _count_skipped(self, records: Sequence[Record]) -> None:
        """Tolerant reader: records of another group's business, or of a type newer than this build, are skipped,
        counted, and never parsed (a payload this group would not read cannot be poison to it). One increment of
        each counter per type, not per record: a labelled counter's `inc` takes a lock, and skips are most of what
        many groups do."""
        if not records:
            return
        by_type = Counter(record.headers.get("type", "") for record in records)
        for record_type, count in by_type.items():
            unhandled = self._unhandled.get(record_type)
            if unhandled is None:
                unhandled = self._unhandled[record_type] = UNHANDLED_TYPES.labels(self.spec.group, record_type)
            unhandled.inc(count)
        self._skipped.inc(len(records))

    def _handles(self, record: Record) -> bool:
        """Whether this group has a handler for the record's type (a record without one is parsed, and parked
        if it does not parse)."""
        record_type = record.headers.get("type")
        return record_type is None or record_type in self.spec.handlers

    async def _apply(self, envelope: Envelope, event: IntegrationEvent, handler: Handler) -> None:
        correlation = correlation_id_var.set(envelope.correlation_id)
        causation = causation_id_var.set(envelope.id)
        try:
            with tracing.handling(self.spec.group, envelope.type, envelope.traceparent, envelope.tracestate):
                async with self._unit_of_work() as uow:
                    if not await claim_unprocessed(uow, self.spec.group, [envelope.id]):
                        HANDLED.labels(self.spec.group, "duplicate").inc()
                        return
                    await handler(event, uow)
        finally:
            correlation_id_var.reset(correlation)
            causation_id_var.reset(causation)
        self._record_success([envelope])

    def _record_success(self, applied: Sequence[Envelope]) -> None:
        """Count messages whose transaction has committed, and observe each one's latency. One count, one clock
        reading and one histogram update for them all: they committed together (a count or a clock reading per
        message cost about 0.6 µs of the 40-50 µs a batched message costs, bench/kafka_throughput.py; an `observe`
        per message 6% of the batch consumer's CPU). Each message's latency is still observed (`observe_all`)."""
        if not applied:
            return
        self._handled_ok.inc(len(applied))
        now = datetime.now(UTC)
        observe_all(
            self._handle_latency, [max(0.0, (now - envelope.occurred_at).total_seconds()) for envelope in applied]
        )

    async def park(self, record: Record, error: BaseException, attempts: int) -> None:
        """Put the record on its topic's dead-letter topic with why. If the log cannot take it, this raises and
        the record is retried later (never skipped unparked)."""
        # Its commit below must follow the one in hand; if that one failed, this raises before parking anything,
        # so the record is retried rather than parked twice.
        await self._settle_commit()
        original_topic = record.headers.get(ORIGINAL_TOPIC, record.topic)
        log.error(
            "message parked on the dead-letter topic",
            consumer=self.spec.group,
            topic=original_topic,
            offset=record.offset,
            error=repr(error),
        )
        headers = {
            **{k: v for k, v in record.headers.items() if k != ORIGINAL_TOPIC},
            "dlq.consumer_group": self.spec.group,
            "dlq.original_topic": original_topic,
            "dlq.original_partition": str(record.partition),
            "dlq.original_offset": str(record.offset),
            "dlq.error_type": type(error).__name__,
            "dlq.error": _sendable(str(error)[:2000]),
            "dlq.stacktrace": _sendable("".join(traceback.format_exception(error))[-4000:]),
            "dlq.attempts": str(attempts),
            "dlq.failed_at": datetime.now(UTC).isoformat(),
        }
        dlq = dead_letter_topic(original_topic)
        await self.log.publish([OutgoingMessage(topic=dlq, key=record.key, value=record.value, headers=headers)])
        DEAD_LETTERS.labels(self.spec.group, original_topic).inc()
        HANDLED.labels(self.spec.group, "dead_letter").inc()
        # Commit past it at once: a crash now must not park it (and the poison before it) a second time.
        if self._consumer is not None:
            tp = TopicPartition(record.topic, record.partition)
            self._done[tp] = record.offset + 1
            await self._commit(self._consumer, {tp})


def _sendable(text: str) -> str:
    """An error's text as a header every log takes (`log.check_headers`): a lone surrogate (an error quoting text
    that held one) becomes "?", else the park would be refused, and the record retried, for ever."""
    return text if text.isascii() else text.encode(errors="replace").decode()


def stuck_workers(workers: Sequence[ConsumerWorker], threshold: float) -> list[str]:
    """The groups whose poll loop has not gone round for over `threshold` seconds (a readiness check)."""
    return sorted(worker.spec.group for worker in workers if worker.stuck_for() > threshold)


async def wait_for_assignment(consumer: LogConsumer, partitions: set[TopicPartition], timeout: float = 30.0) -> None:
    """Admin tools read as a group: wait until this member owns every partition, rather than taking the first
    empty poll (before the member joined) for "nothing there"."""
    deadline = time.monotonic() + timeout
    while not partitions <= await consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not assigned {sorted(partitions - await consumer.assignment())} in {timeout:g}s")
        await asyncio.sleep(0.05)


async def replay_dead_letters(message_log: MessageLog, topic: str, *, group: str) -> int:
    """Redeliver the messages `group` parked on `<topic>.dlq` to that group only (its redelivery topic), once.

    A bounded pass: what was parked when it started; a message parked again meanwhile waits for the next
    replay. Progress is a replay group's committed offsets, so each is redelivered once (a crash between the
    publish and the commit redelivers it once more: the inbox makes that harmless). The group applies it
    with the same message id, or parks it again if it still fails. Returns how many were redelivered."""
    dlq = dead_letter_topic(topic)
    end = await message_log.end_offsets(dlq)
    if not end:
        return 0
    consumer = message_log.consumer(f"gatherly.dlq-replay.{group}", [dlq])
    replayed = 0
    try:
        await wait_for_assignment(consumer, set(end))
        remaining = {tp for tp, offset in end.items() if offset > 0}
        while remaining:
            positions = {tp: await message_log.committed(consumer.group, tp) or 0 for tp in remaining}
            remaining = {tp for tp in remaining if positions[tp] < end[tp]}
            if not remaining:
                break
            records = await consumer.poll(500, timeout=0.5)
            out: list[OutgoingMessage] = []
            done: dict[TopicPartition, int] = {}
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                if record.offset >= end[tp]:
                    continue  # parked after the pass began
                done[tp] = record.offset + 1
                if record.headers.get("dlq.consumer_group") != group:
                    continue
                headers = {k: v for k, v in record.headers.items() if not k.startswith("dlq.")}
                headers[ORIGINAL_TOPIC] = record.headers.get("dlq.original_topic", topic)
                headers["replayed_from"] = f"{record.topic}:{record.partition}:{record.offset}"
                out.append(
                    OutgoingMessage(topic=redelivery_topic(group), key=record.key, value=record.value, headers=headers)
                )
            if out:
                await message_log.publish(out)
                replayed += len(out)
            await consumer.commit(done)
            for tp in [tp for tp in remaining if done.get(tp, 0) >= end[tp]]:
                remaining.discard(tp)
    finally:
        await consumer.close()
    return replayed


async def rebuild_group(db: Database, message_log: MessageLog, group: str, topics: Sequence[str]) -> None:
    """Make a stopped group read `topics` from the beginning and apply everything again (read-model rebuild).

    Refuses (GroupNotEmpty) BEFORE touching the inbox when the group has live members: deleting the inbox
    under a running consumer would make its next duplicate delivery apply twice."""
    members = await message_log.group_members(group)
    if members:
        raise GroupNotEmpty(f"group {group!r} has live members {sorted(members)}: stop its consumers first")
    # Offsets first: the log refuses the reset itself if a member joined since the check, and a rewind whose
    # inbox is still there only makes the group skip what it already applied (run the command again).
    await message_log.reset_group(group, list(topics), "earliest")
    # Not the redelivery topic: what `dlq replay` redelivered is on the source topics too (applied again by the
    # rewind) or was parked again; reading it from the start would apply old messages after newer ones.
    await message_log.reset_group(group, [redelivery_topic(group)], "latest")
    await forget_processed(db, group)


def topics_of(specs: Sequence[ConsumerSpec]) -> set[str]:
    return {topic for spec in specs for topic in spec.topics}


async def forget_processed(db: Database, group: str) -> None:
    """Delete a consumer group's inbox rows, so a replay from the beginning applies every message again."""
    async with db.writing() as session:
        await session.execute(delete(INBOX).where(INBOX.c.consumer == group))


async def prune_inbox(db: Database, older_than: timedelta) -> int:
    """Forget inbox rows older than the log keeps messages: such a message can no longer be delivered again.
    In small batches through ix_inbox_processed_at, so a large prune never stalls the event loop."""
    cutoff = datetime.now(UTC) - older_than
    return await delete_in_batches(db, INBOX, INBOX.c.processed_at < cutoff)
