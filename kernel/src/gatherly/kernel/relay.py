"""The polling relay: moves committed outbox rows to the message log in commit order, then deletes them; one active
relay per service database (a lease on SQLite, an advisory lock on PostgreSQL); outbox cleanup for Debezium."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import Integer, Row, Text, bindparam, cast, delete, func, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.kernel import tracing
from gatherly.kernel.db import Database, delete_in_batches, rowcount
from gatherly.kernel.fixed_reads import FixedRead
from gatherly.kernel.log.base import MessageLog, OutgoingMessage
from gatherly.kernel.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_CLEANED,
    OUTBOX_HELD_ROWS,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PUBLISH_FAILURES,
    RELAY_LEADER,
    RELAYED,
)
from gatherly.kernel.tables import KERNEL_METADATA, OUTBOX_CHANNEL
from gatherly.kernel.uow import OUTBOX, OutboxSignal

log = structlog.get_logger(__name__)

RELAY_LEASE = KERNEL_METADATA.tables["relay_lease"]
# Built once, like the relay's read: a statement's construction and cache key cost about what SQLite takes to run it,
# and the relay runs one per batch.
DELETE_PUBLISHED = delete(OUTBOX).where(OUTBOX.c.seq.in_(bindparam("seqs", expanding=True)))
DELETE_READ = delete(OUTBOX).where(OUTBOX.c.seq <= bindparam("read_up_to"))
DELETE_READ_BUT_HELD = DELETE_READ.where(OUTBOX.c.seq.not_in(bindparam("held", expanding=True)))
_WAITING = select(OUTBOX.c.seq, OUTBOX.c.occurred_at)
BACKLOG = {
    # (the count is bounded: a huge backlog is not counted row by row every second)
    cursor_mode: select(func.count(), func.min(waiting.c.occurred_at))
    for cursor_mode, waiting in (
        (False, _WAITING.order_by(OUTBOX.c.seq).limit(100_000).subquery()),
        (True, _WAITING.where(OUTBOX.c.seq > bindparam("read_up_to")).order_by(OUTBOX.c.seq).limit(100_000).subquery()),
    )
}
# The rows as the relay reads them: the payload as the JSON text its column holds (PostgreSQL's jsonb text, SQLite's
# stored text), which becomes the message's value as it is. Parsing it only to serialize it again cost ~4 µs of CPU
# per message (a tenth of the relay's); a consumer reads the same JSON either way (Debezium sends jsonb's text too).
# Its columns in a fixed order, which `_message` unpacks (a `Row`'s attribute lookups were ~4 µs a message).
RELAYED_ROWS = select(
    OUTBOX.c.seq,
    OUTBOX.c.id,
    OUTBOX.c.type,
    OUTBOX.c.schema_version,
    OUTBOX.c.aggregatetype,
    OUTBOX.c.aggregateid,
    OUTBOX.c.occurred_at,
    cast(OUTBOX.c.payload, Text).label("payload"),
    OUTBOX.c.correlation_id,
    OUTBOX.c.causation_id,
    OUTBOX.c.traceparent,
    OUTBOX.c.tracestate,
)
# The inline-SQLite relay's read in cursor mode, straight on sqlite3 outside any transaction (`FixedRead.run`).
READ_AFTER_CURSOR_INLINE = FixedRead(
    RELAYED_ROWS.where(OUTBOX.c.seq > bindparam("read_up_to"))
    .order_by(OUTBOX.c.seq)
    .limit(bindparam("batch_size", type_=Integer))
)
# How long a streaming relay waits for more rows before reading (see `OutboxRelay._linger`): a few milliseconds of
# latency buy passes of several rows when commits come faster than one per `LINGER_S`.
LINGER_S = 0.003
# pg_advisory_lock takes a bigint; any fixed number works, since each service has its own database.
RELAY_LOCK_KEY = 0x6761_7468_6572  # "gather"


class Leadership(Protocol):
    """Whether this relay is the one that may publish its database's outbox."""

    async def hold(self) -> bool:
        """Take or keep the leadership; True while this relay leads. Cheap to call before every batch."""
        ...

    async def release(self) -> None: ...


class SqliteLease:
    """A row in `relay_lease`, renewed every `ttl / 3` by its holder. A relay that dies stops renewing and another
    takes over once the lease has expired. The holder stops publishing `margin` before its lease ends, so two
    relays never both believe they lead (the relays share one machine, hence one clock)."""

    def __init__(self, db: Database, *, ttl: float = 10.0, name: str = "outbox") -> None:
        self.db = db
        self.ttl = ttl
        self.name = name
        self.margin = ttl / 5
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._valid_until = float("-inf")  # monotonic
        self._renew_at = float("-inf")
        self._table_checked = False

    async def hold(self) -> bool:
        now = time.monotonic()
        if now < self._renew_at:
            return now < self._valid_until
        if not self._table_checked:
            # Databases migrated before the lease existed get the table here (IF NOT EXISTS).
            async with self.db.engine.begin() as connection:
                await connection.run_sync(lambda sync: RELAY_LEASE.create(sync, checkfirst=True))
            self._table_checked = True
        started, wall = time.monotonic(), time.time()
        statement = sqlite_insert(RELAY_LEASE).values(name=self.name, holder=self.holder, expires_at=wall + self.ttl)
        statement = statement.on_conflict_do_update(
            index_elements=[RELAY_LEASE.c.name],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=(RELAY_LEASE.c.holder == self.holder) | (RELAY_LEASE.c.expires_at < wall),
        )
        async with self.db.writing() as session:
            taken = rowcount(await session.execute(statement)) == 1
            if not taken and await self._holder_died(session):
                # The holder was SIGKILLed (a restarted `gatherly up`): take over now rather than after its ttl.
                taken = rowcount(await session.execute(statement)) == 1
        if taken:
            self._valid_until = started + self.ttl - self.margin
            self._renew_at = started + self.ttl / 3
        else:
            self._valid_until = float("-inf")
            self._renew_at = started + self.ttl / 3  # ask again when a dead holder's lease may have run out
        return taken

    async def _holder_died(self, session: AsyncConnection) -> bool:
        """Whether the lease's holder is a process of this machine that no longer exists (holders are named
        `<pid>-<random>`; an SQLite file is only ever shared by processes of one machine). If so, its lease is
        removed. A pid reused by another process only means waiting for the lease to expire, as before."""
        holder = await session.scalar(select(RELAY_LEASE.c.holder).where(RELAY_LEASE.c.name == self.name))
        pid_text = (holder or "").split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            return False
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            await session.execute(
                delete(RELAY_LEASE).where(RELAY_LEASE.c.name == self.name, RELAY_LEASE.c.holder == holder)
            )
            return True
        except OSError:
            return False  # it exists (another user's process): alive
        return False

    async def release(self) -> None:
        if self._valid_until == float("-inf"):
            return
        self._valid_until = self._renew_at = float("-inf")
        async with self.db.writing() as session:
            await session.execute(
                delete(RELAY_LEASE).where(RELAY_LEASE.c.name == self.name, RELAY_LEASE.c.holder == self.holder)
            )


class PostgresAdvisoryLock:
    """A session-level advisory lock on a connection kept open for it. PostgreSQL frees the lock when the session
    ends, so when the leader's process dies (or its connection breaks) another relay takes it at its next try.
    The leader checks its connection every `check_every` seconds and stops leading if it is gone."""

    def __init__(self, db: Database, *, check_every: float = 2.0, key: int = RELAY_LOCK_KEY) -> None:
        self.db = db
        self.check_every = check_every
        self.key = key
        self._connection: AsyncConnection | None = None
        self._check_at = float("-inf")

    async def hold(self) -> bool:
        now = time.monotonic()
        if now < self._check_at:
            return self._connection is not None
        self._check_at = now + self.check_every
        if self._connection is not None:
            try:
                await self._connection.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("relay lost its advisory-lock connection; no longer leading", exc_info=True)
                await self._drop()
                return False
        connection = await self.db.engine.connect()
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
        except BaseException:
            await connection.close()
            raise
        if not taken:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def release(self) -> None:
        if self._connection is None:
            return
        try:
            await self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        finally:
            await self._drop()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Invalidate rather than return to the pool: a pooled session must not keep the lock.
            await connection.invalidate()
            await connection.close()


def leadership_for(db: Database) -> Leadership:
    return SqliteLease(db) if db.is_sqlite else PostgresAdvisoryLock(db)


@dataclass
class HeldKey:
    """Rows of one aggregate held back behind a row the log refused; retried with exponential backoff."""

    rows: list[Row[Any]]
    failing_since: float  # monotonic
    error: str
    attempts: int = 1
    next_try_at: float = 0.0

    @property
    def seqs(self) -> list[int]:
        return [row.seq for row in self.rows]


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 60.0

    def delay(self, attempts: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** (attempts - 1)))


class OutboxStuck(Exception):
    """Raised by the readiness check while some outbox row has been unpublishable for too long."""


@dataclass
class _Pass:
    published: list[int] = field(default_factory=list)
    failures: int = 0


class OutboxRelay:
    """At-least-once: a crash between publishing and deleting republishes rows with the same message id,
    which consumers' inboxes then ignore. Rows go out in `seq` order, so each aggregate's events keep theirs.

    Only the leader publishes (see `Leadership`); other relays on the same database wait to take over.

    A row the log refuses holds back its own aggregate's rows only (the ordering guarantee is per aggregate, which
    is also the partition key): it is retried with exponential backoff, counted, and after `alert_after` seconds
    `check` fails the service's readiness with the reason. If the whole batch fails (the log is down), nothing
    is held: `run` raises, and the host's supervisor restarts it with backoff."""

    def __init__(
        self,
        service: str,
        db: Database,
        message_log: MessageLog,
        signal: OutboxSignal,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 500,
        leadership: Leadership | None = None,
        backoff: Backoff | None = None,
        alert_after: float = 60.0,
        linger: float = LINGER_S,
    ) -> None:
        self.service = service
        self.db = db
        self.log = message_log
        self.signal = signal
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.leadership = leadership or leadership_for(db)
        self.backoff = backoff or Backoff()
        self.alert_after = alert_after
        self.linger = linger
        self._published_at = float("-inf")  # monotonic, the last pass that published rows
        self._stopping = asyncio.Event()
        # SQLite commits one writer at a time, so `seq` order is commit order and the relay may read on from
        # the last row it read and delete published rows in bulk now and then (a write transaction per
        # batch would cost more than the publishing). On PostgreSQL a row with a lower seq can commit after a
        # higher one, so there the relay always reads from the oldest remaining row and deletes per batch.
        self._cursor_mode = db.is_sqlite
        self._read_up_to = 0
        self._undeleted = 0
        self._last_delete = time.monotonic()
        self.delete_every_seconds = 1.0
        self.delete_every_rows = 5000
        self._held: dict[tuple[str, str], HeldKey] = {}
        self._gauges_at = float("-inf")
        # Reads go through a Core connection, not an ORM session: the relay reads once per commit, and a session's
        # bookkeeping cost more than the query (see bench/README.md). DEFERRED: reading takes no write lock.
        self._reads = db.engine.execution_options(sqlite_begin="DEFERRED")
        # While `run` runs it keeps one connection for its reads: checking one out of the pool per pass cost
        # ~0.7 ms (pool events, reset on return), more than the read itself.
        self._connection: AsyncConnection | None = None
        # Metrics set on every pass, looked up once (each lookup of a labelled metric takes tens of microseconds).
        self._leader = RELAY_LEADER.labels(service)
        self._held_rows = OUTBOX_HELD_ROWS.labels(service)
        self._relayed = RELAYED.labels(service)
        # Built once (a statement's construction and cache key cost about what SQLite takes to run it).
        self._oldest_rows = RELAYED_ROWS.order_by(OUTBOX.c.seq).limit(bindparam("batch_size", type_=Integer))
        self._rows_after_cursor = self._oldest_rows.where(OUTBOX.c.seq > bindparam("read_up_to"))

    async def run(self) -> None:
        """Relay until `stop`. Errors propagate (wrap it in the host's supervisor); a restarted run resumes."""
        try:
            async with self._reads.connect() as connection:
                self._connection = connection
                if self.db.is_sqlite:
                    await self._relay_until_stopped()
                else:
                    async with self._woken_by_commits(connection):
                        await self._relay_until_stopped()
        finally:
            self._connection = None
            self._leader.set(0)
            await self.leadership.release()

    @contextlib.asynccontextmanager
    async def _woken_by_commits(self, connection: AsyncConnection) -> AsyncIterator[None]:
        """LISTEN on the outbox's channel (PostgreSQL): the outbox trigger NOTIFYs it at each commit that wrote
        rows, from any process, so a replica's commit wakes the leading relay as its own process's commits do
        (those also through `signal`); `poll_interval` is then only the fallback. Registered before the
        connection's first statement, so the LISTEN is not part of a read transaction that is rolled back."""
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None

        def wake(*_: object) -> None:
            self.signal.notify()

        await driver.add_listener(OUTBOX_CHANNEL, wake)
        try:
            yield
        finally:
            # The connection goes back to the pool: it must not keep listening (nor keep a callback on us).
            with contextlib.suppress(Exception):
                await driver.remove_listener(OUTBOX_CHANNEL, wake)

    async def _relay_until_stopped(self) -> None:
        while not self._stopping.is_set():
            if await self.leadership.hold():
                self._leader.set(1)
                while (
                    await self.relay_once() == self.batch_size
                    and not self._stopping.is_set()
                    and await self.leadership.hold()
                ):
                    pass
                await self._update_gauges()
                wait = min(self.poll_interval, self._next_retry_in())
            else:
                self._leader.set(0)
                self._forget_progress()
                wait = self.poll_interval
            await self.signal.wait(wait)
            await self._linger()
        await self.delete_published()

    async def _linger(self) -> None:
        """While rows stream in, read at most once per `linger` seconds, so each pass carries the rows committed
        meanwhile (Kafka's `linger.ms`). A commit after a quiet spell is read at once; one while streaming waits at
        most `linger`. Each pass costs a read, a log append and, downstream, a consumer's poll and transaction: one
        per commit, they were most of a single-event transaction's cost."""
        wait = self._published_at + self.linger - time.monotonic()
        if wait > 0 and not self._stopping.is_set():
            # Cut short by stop(): a relay told to stop while lingering stops at once, not `linger` later.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()

    def stop(self) -> None:
        self._stopping.set()
        self.signal.notify()

    def _forget_progress(self) -> None:
        # A relay that is not leading keeps nothing: when it leads again it starts from the oldest row.
        self._read_up_to = 0
        self._undeleted = 0
        self._held.clear()

    async def relay_once(self) -> int:
        """Publish one batch of outbox rows (and retry held ones that are due); returns how many rows were read."""
        done = _Pass()
        await self._retry_held(done)
        query = self._oldest_rows
        if self._cursor_mode:
            query = self._rows_after_cursor
        elif self._held:
            query = query.where(OUTBOX.c.seq.not_in([seq for held in self._held.values() for seq in held.seqs]))
        parameters = {"read_up_to": self._read_up_to, "batch_size": self.batch_size}
        rows: Sequence[Any]
        if self._connection is not None and self._cursor_mode and self.db.inline:
            rows = READ_AFTER_CURSOR_INLINE.run(self._connection, parameters)
        elif self._connection is None:
            async with self._reads.connect() as connection:
                rows = (await connection.execute(query, parameters)).all()
        else:
            # Ended at once: an open read transaction would pin the WAL (SQLite) or a snapshot (PostgreSQL).
            rows = (await self._connection.execute(query, parameters)).all()
            await self._connection.rollback()
        if rows:
            await self._publish_new(rows, done)
            self._read_up_to = rows[-1].seq
            self._published_at = time.monotonic()
        await self._forget_published(done.published)
        return len(rows)

    async def _publish_new(self, rows: Sequence[Row[Any]], done: _Pass) -> None:
        # (With nothing held, as almost always, no row's key is looked at: a tuple per row was 3% of the relay's CPU.)
        free = [row for row in rows if _key(row) not in self._held] if self._held else rows
        refused: dict[tuple[str, str], tuple[list[Row[Any]], BaseException]] = {}
        try:
            if free:
                await self._publish(free)
            done.published.extend(row.seq for row in free)
        except Exception as batch_error:
            if len(free) > 1:
                # One by one, to find the rows the log refuses; an aggregate stops at its first refused row.
                for row in free:
                    if _key(row) in refused:
                        refused[_key(row)][0].append(row)
                        continue
                    try:
                        await self._publish([row])
                        done.published.append(row.seq)
                    except Exception as row_error:
                        refused[_key(row)] = ([row], row_error)
                if not done.published:
                    # Nothing at all went through: the log is unavailable, not a row. Hold nothing and leave the
                    # cursor where it was; the caller (the supervisor) retries with backoff.
                    raise batch_error from None
            else:
                refused[_key(free[0])] = ([free[0]], batch_error)  # alone, a refused row and an outage look alike
        if self._held:
            for row in rows:
                if _key(row) in self._held:
                    self._held[_key(row)].rows.append(row)  # behind its aggregate's stuck row, in order
        for held_rows, refusal in refused.values():
            self._hold(held_rows, refusal)

    def _hold(self, rows: list[Row[Any]], error: BaseException) -> None:
        key = _key(rows[0])
        now = time.monotonic()
        held = HeldKey(rows=rows, failing_since=now, error=f"{type(error).__name__}: {error}")
        held.next_try_at = now + self.backoff.delay(held.attempts)
        self._held[key] = held
        OUTBOX_PUBLISH_FAILURES.labels(self.service).inc()
        log.error(
            "outbox row could not be published; its aggregate's rows wait and are retried",
            service=self.service,
            seq=rows[0].seq,
            message_id=rows[0].id,
            aggregate=f"{key[0]}/{key[1]}",
            error=held.error,
        )

    async def _retry_held(self, done: _Pass) -> None:
        now = time.monotonic()
        for key, held in list(self._held.items()):
            if held.next_try_at > now:
                continue
            while held.rows:
                row = held.rows[0]
                try:
                    await self._publish([row])
                except Exception as error:
                    held.attempts += 1
                    held.error = f"{type(error).__name__}: {error}"
                    held.next_try_at = time.monotonic() + self.backoff.delay(held.attempts)
                    OUTBOX_PUBLISH_FAILURES.labels(self.service).inc()
                    log.error(
                        "outbox row still cannot be published",
                        service=self.service,
                        seq=row.seq,
                        attempts=held.attempts,
                        error=held.error,
                    )
                    break
                done.published.append(row.seq)
                held.rows.pop(0)
            if not held.rows:
                del self._held[key]
                log.info("held outbox rows published", service=self.service, aggregate=f"{key[0]}/{key[1]}")

    async def _publish(self, rows: Sequence[Row[Any]]) -> None:
        """Publish rows in one call; while tracing, each in a publish span that its message's headers name."""
        spans = tracing.publishing(self.service, rows)
        if spans is None:
            await self.log.publish([_message(row) for row in rows])
            return
        messages = [_message(row, trace) for row, trace in zip(rows, spans.headers(), strict=True)]
        try:
            await self.log.publish(messages)
        except BaseException as error:
            spans.end(error)
            raise
        spans.end()

    def _next_retry_in(self) -> float:
        if not self._held:
            return float("inf")
        return max(0.0, min(held.next_try_at for held in self._held.values()) - time.monotonic())

    async def _forget_published(self, seqs: list[int]) -> None:
        self._held_rows.set(sum(len(held.rows) for held in self._held.values()))
        if not seqs:
            if not self._held:
                await self.delete_published()
            return
        self._relayed.inc(len(seqs))
        if not self._cursor_mode:
            async with self.db.writing() as session:
                await session.execute(DELETE_PUBLISHED, {"seqs": seqs})
            return
        self._undeleted += len(seqs)
        if (
            self._undeleted >= self.delete_every_rows
            or time.monotonic() - self._last_delete >= self.delete_every_seconds
        ):
            await self.delete_published()

    async def delete_published(self) -> None:
        """Remove rows already in the log (cursor mode). A crash before this only means they go out again."""
        if not self._cursor_mode or not self._undeleted:
            return
        held = [seq for rows in self._held.values() for seq in rows.seqs]
        async with self.db.writing() as session:
            if held:
                await session.execute(DELETE_READ_BUT_HELD, {"read_up_to": self._read_up_to, "held": held})
            else:
                await session.execute(DELETE_READ, {"read_up_to": self._read_up_to})
        self._undeleted = 0
        self._last_delete = time.monotonic()

    async def check(self) -> None:
        """Readiness check: fails while a row has been unpublishable for longer than `alert_after` seconds."""
        now = time.monotonic()
        stuck = [(key, held) for key, held in self._held.items() if now - held.failing_since >= self.alert_after]
        if stuck:
            (kind, aggregate), held = stuck[0]
            raise OutboxStuck(
                f"outbox: {len(stuck)} aggregate(s) held back, e.g. {kind}/{aggregate} "
                f"(seq {held.rows[0].seq}, {held.attempts} attempts, "
                f"failing for {now - held.failing_since:.0f}s): {held.error}"
            )

    async def _update_gauges(self) -> None:
        """Backlog and age of the oldest unpublished row, at most once a second (a bounded count)."""
        now = time.monotonic()
        if now - self._gauges_at < 1.0:
            return
        self._gauges_at = now
        parameters = {"read_up_to": self._read_up_to} if self._cursor_mode else {}
        async with self.db.read_connection() as connection:
            count, oldest = (await connection.execute(BACKLOG[self._cursor_mode], parameters)).one()
        held = [row for rows in self._held.values() for row in rows.rows]
        if self._cursor_mode:
            count += len(held)
        times = [t for t in [oldest, *(row.occurred_at for row in held)] if t is not None]
        OUTBOX_BACKLOG.labels(self.service).set(count)
        age = (datetime.now(UTC) - _utc(min(times))).total_seconds() if times else 0.0
        OUTBOX_OLDEST_AGE.labels(self.service).set(max(0.0, age))


class OutboxCleaner:
    """With Debezium publishing the outbox (`GATHERLY_RELAY=debezium`), nothing else deletes its rows.

    Debezium reads the rows' INSERTs from PostgreSQL's write-ahead log through its replication slot, which keeps
    the WAL until Debezium has confirmed it, so deleting a row cannot take it from Debezium, and the Outbox Event
    Router ignores the DELETEs. Debezium's docs suggest deleting right after the insert in the same transaction;
    we delete in a bounded loop instead, rows older than `keep` (10 minutes: long enough to look at recent events
    when debugging) in batches of `batch_size`, each its own short transaction, so the unit of work stays the
    same in both modes and no cleanup holds locks for long."""

    def __init__(
        self,
        service: str,
        db: Database,
        *,
        keep: timedelta = timedelta(minutes=10),
        interval: float = 30.0,
        batch_size: int = 1000,
    ) -> None:
        self.service = service
        self.db = db
        self.keep = keep
        self.interval = interval
        self.batch_size = batch_size

    async def run(self) -> None:
        """Clean every `interval` seconds until cancelled; errors propagate to the host's supervisor."""
        while True:
            await self.clean_once()
            await asyncio.sleep(self.interval)

    async def clean_once(self, now: datetime | None = None) -> int:
        """Delete rows older than `keep`, a batch per transaction; returns how many were deleted."""
        cutoff = (now or datetime.now(UTC)) - self.keep
        deleted = await delete_in_batches(self.db, OUTBOX, OUTBOX.c.occurred_at < cutoff, batch_size=self.batch_size)
        OUTBOX_CLEANED.labels(self.service).inc(deleted)
        return deleted


def _key(row: Row[Any]) -> tuple[str, str]:
    return (row.aggregatetype, row.aggregateid)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _message(row: Sequence[Any], trace: tuple[str | None, str | None] | None = None) -> OutgoingMessage:
    """The message of a row read with `RELAYED_ROWS` (its payload as JSON text), as `Envelope.to_message` makes it
    but for the JSON's spacing and escapes (`test_a_row_becomes_the_message_its_envelope_makes`);
    `trace` replaces its stored trace headers (with those of the relay's publish span). Built straight from the row:
    going through an `Envelope` per row (a frozen dataclass, then a dict of headers filtered for None) was a fifth
    of the relay's CPU per message."""
    (
        _,
        message_id,
        message_type,
        schema_version,
        topic,
        key,
        occurred_at,
        payload,
        correlation_id,
        causation_id,
        traceparent,
        tracestate,
    ) = row
    if trace is not None:
        traceparent, tracestate = trace
    headers = {
        "id": message_id,
        "type": message_type,
        "schema_version": str(schema_version),
        "aggregate_type": topic,
        "aggregate_id": key,
        "occurred_at": occurred_at.isoformat(),
    }
    for name, value in (
        ("correlation_id", correlation_id),
        ("causation_id", causation_id),
        ("traceparent", traceparent),
        ("tracestate", tracestate),
    ):
        if value is not None:
            headers[name] = value
    return OutgoingMessage(topic=topic, key=key, value=payload.encode(), headers=headers)
