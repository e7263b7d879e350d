"""The polling relay: moves committed outbox rows to the message log in commit order, then deletes them."""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import delete, select

from gatherly.kernel.db import Database
from gatherly.kernel.log.base import MessageLog
from gatherly.kernel.messages import Envelope
from gatherly.kernel.metrics import RELAYED
from gatherly.kernel.uow import OUTBOX, OutboxSignal

log = structlog.get_logger(__name__)


class OutboxRelay:
    """At-least-once: a crash between publishing and deleting republishes rows with the same message id,
    which consumers' inboxes then ignore. Rows go out in `seq` order, so each aggregate's events keep theirs.

    Run one relay per service database (a single process in embedded mode)."""

    def __init__(
        self,
        service: str,
        db: Database,
        message_log: MessageLog,
        signal: OutboxSignal,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self.service = service
        self.db = db
        self.log = message_log
        self.signal = signal
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._stopping = asyncio.Event()
        # SQLite commits one writer at a time, so `seq` order is commit order and the relay may read on from
        # the last row it published and delete published rows in bulk now and then (a write transaction per
        # batch would cost more than the publishing). On PostgreSQL a row with a lower seq can commit after a
        # higher one, so there the relay always reads from the oldest remaining row and deletes per batch.
        self._cursor_mode = db.is_sqlite
        self._published_up_to = 0
        self._undeleted = 0
        self._last_delete = time.monotonic()
        self.delete_every_seconds = 1.0
        self.delete_every_rows = 5000

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                while await self.relay_once() == self.batch_size and not self._stopping.is_set():
                    pass
            except Exception:
                # The log or the database is unavailable: keep the rows, try again after the poll interval.
                log.exception("outbox relay failed; will retry", service=self.service)
                await asyncio.sleep(self.poll_interval)
            await self.signal.wait(self.poll_interval)
        await self.delete_published()

    def stop(self) -> None:
        self._stopping.set()
        self.signal.notify()

    async def relay_once(self) -> int:
        """Publish one batch of outbox rows; returns how many were published."""
        query = select(OUTBOX).order_by(OUTBOX.c.seq).limit(self.batch_size)
        if self._cursor_mode:
            query = query.where(OUTBOX.c.seq > self._published_up_to)
        async with self.db.read_session() as session:
            rows = (await session.execute(query)).all()
        if not rows:
            await self.delete_published()
            return 0
        envelopes = [
            Envelope(
                id=row.id,
                type=row.type,
                schema_version=row.schema_version,
                aggregate_type=row.aggregatetype,
                aggregate_id=row.aggregateid,
                occurred_at=row.occurred_at,
                payload=row.payload,
                correlation_id=row.correlation_id,
                causation_id=row.causation_id,
                traceparent=row.traceparent,
            )
            for row in rows
        ]
        await self.log.publish([e.to_message() for e in envelopes])
        RELAYED.labels(self.service).inc(len(rows))
        if not self._cursor_mode:
            async with self.db.writing() as session:
                await session.execute(delete(OUTBOX).where(OUTBOX.c.seq.in_([row.seq for row in rows])))
            return len(rows)
        self._published_up_to = rows[-1].seq
        self._undeleted += len(rows)
        if (
            self._undeleted >= self.delete_every_rows
            or time.monotonic() - self._last_delete >= self.delete_every_seconds
        ):
            await self.delete_published()
        return len(rows)

    async def delete_published(self) -> None:
        """Remove rows already in the log (cursor mode). A crash before this only means they go out again."""
        if not self._cursor_mode or not self._undeleted:
            return
        async with self.db.writing() as session:
            await session.execute(delete(OUTBOX).where(OUTBOX.c.seq <= self._published_up_to))
        self._undeleted = 0
        self._last_delete = time.monotonic()
