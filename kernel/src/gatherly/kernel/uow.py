"""The unit of work: one database transaction that commits a service's state and its outgoing events together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Self

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel import inline_sqlite, tracing
from gatherly.kernel.clock import Clock, SystemClock
from gatherly.kernel.db import Database
from gatherly.kernel.messages import Envelope
from gatherly.kernel.tables import KERNEL_METADATA

OUTBOX = KERNEL_METADATA.tables["outbox"]
INBOX = KERNEL_METADATA.tables["inbox"]
# Built once: every transaction that publishes or consumes runs these, and building a statement and its cache key
# per call cost about as much as SQLite running it.
INSERT_OUTBOX = insert(OUTBOX)
OUTBOX_COLUMNS = [column.key for column in OUTBOX.columns if column.key != "seq"]
INSERT_OUTBOX_INLINE = inline_sqlite.DirectInsert(INSERT_OUTBOX, OUTBOX_COLUMNS)
INSERT_INBOX = insert(INBOX)
PROCESSED_AMONG = select(INBOX.c.message_id).where(
    INBOX.c.consumer == bindparam("consumer"), INBOX.c.message_id.in_(bindparam("message_ids", expanding=True))
)


class OutboxSignal:
    """Wakes the in-process relay right after a commit that wrote to the outbox (polling is the fallback).

    A future and a timer rather than `asyncio.wait_for(event.wait())`, which starts a task per wait: the relay
    waits once per commit, so this is on the path of every single-event transaction."""

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def notify(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Return when notified (at once if notified since the last wait) or after `timeout` seconds."""
        if not self._set:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._set = False


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class UnitOfWork:
    """`async with uow:` opens a transaction; leaving the block commits state and outbox rows together,
    or rolls both back on an exception. Services subclass it to add their stores in `open_stores`."""

    def __init__(self, db: Database, *, clock: Clock | None = None, signal: OutboxSignal | None = None) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        self.signal = signal
        self._pending: list[Envelope] = []
        self._session: AsyncConnection | None = None
        self._writing: AbstractAsyncContextManager[AsyncConnection] | None = None
        self._span: AbstractContextManager[Any] = nullcontext()
        self._after_commit: list[Callable[[], None]] = []
        # Set by the service host: wakes this process's refresh of revoked token subjects (kernel/revocation.py).
        self.revocations_changed: Callable[[], None] | None = None
        # Set by a consumer worker for the transactions it runs: they take the consumers' connections (see
        # `Database.writing`).
        self.for_consumer = False

    @property
    def session(self) -> AsyncConnection:
        if self._session is None:
            raise RuntimeError("use the unit of work inside `async with`")
        return self._session

    def open_stores(self, session: AsyncConnection) -> None:
        """Subclasses build their stores on the transaction's connection here."""

    async def __aenter__(self) -> Self:
        # Nesting is refused rather than joined: a joined inner block could not commit on its own, yet its
        # caller would believe it had (and SQLite's write turn is not re-entrant, so it would deadlock).
        if self._session is not None:
            raise RuntimeError(
                "this unit of work is already open: nesting `async with uow` would split the transaction"
            )
        # A span around the transaction (commit included) while a traced request or handler runs it.
        self._span = tracing.unit_of_work(f"{type(self).__name__} transaction")
        self._span.__enter__()
        self._writing = self.db.writing(consumer=self.for_consumer)
        try:
            self._session = await self._writing.__aenter__()
        except BaseException as error:
            self._span.__exit__(type(error), error, error.__traceback__)
            raise
        self._pending = []
        self._after_commit = []
        self.open_stores(self._session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._finish(exc_type, exc, tb)
        except BaseException as error:
            self._span.__exit__(type(error), error, error.__traceback__)
            raise
        self._span.__exit__(exc_type, exc, tb)

    async def _finish(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, writing = self.session, self._writing
        assert writing is not None
        self._session = None
        if exc_type is None:
            try:
                await self._write_outbox(session)
            except BaseException as error:
                await writing.__aexit__(type(error), error, error.__traceback__)
                raise
        # Leaving `writing` commits (or, with an exception, rolls back) and releases the write turn.
        await writing.__aexit__(exc_type, exc, tb)
        if exc_type is None and self._pending and self.signal is not None:
            self.signal.notify()
        callbacks, self._after_commit = self._after_commit, []
        if exc_type is None:
            for callback in callbacks:
                callback()
        self._pending = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction has committed (not at all if it rolls back): for telling other
        parts of the process about rows they can only read once committed."""
        if self._session is None:
            raise RuntimeError("after_commit inside `async with uow`: outside it there is no commit to wait for")
        self._after_commit.append(callback)

    def publish(self, *events: IntegrationEvent) -> None:
        """Queue integration events; they are written to the outbox in this transaction.

        Outside `async with` there is no transaction to write them in: raises rather than dropping them."""
        if self._session is None:
            raise RuntimeError("publish inside `async with uow`: outside it the events would be lost")
        now = self.clock.now()
        self._pending.extend(Envelope.wrap(event, now) for event in events)

    async def _write_outbox(self, session: AsyncConnection) -> None:
        if not self._pending:
            return
        rows = [
            {
                "id": e.id,
                "aggregatetype": e.aggregate_type,
                "aggregateid": e.aggregate_id,
                "type": e.type,
                "schema_version": e.schema_version,
                "payload": e.payload,
                "occurred_at": e.occurred_at,
                "correlation_id": e.correlation_id,
                "causation_id": e.causation_id,
                "traceparent": e.traceparent,
                "tracestate": e.tracestate,
            }
            for e in self._pending
        ]
        if self.db.inline:
            INSERT_OUTBOX_INLINE.run(session, rows)
        else:
            await session.execute(INSERT_OUTBOX, rows)

    async def processed_among(self, consumer: str, message_ids: Sequence[str]) -> set[str]:
        """Which of these messages `consumer` applied before (one query for a whole batch)."""
        found = await self.session.scalars(PROCESSED_AMONG, {"consumer": consumer, "message_ids": list(message_ids)})
        return set(found)

    async def mark_processed(self, consumer: str, *message_ids: str) -> None:
        if not message_ids:
            return
        now = self.clock.now()
        await self.session.execute(
            INSERT_INBOX, [{"consumer": consumer, "message_id": m, "processed_at": now} for m in message_ids]
        )
