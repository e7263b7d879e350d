"""The polling relay: moves committed outbox rows to the message log in commit order, then deletes them."""

from __future__ import annotations

import asyncio

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

    def stop(self) -> None:
        self._stopping.set()
        self.signal.notify()

    async def relay_once(self) -> int:
        """Publish one batch of outbox rows; returns how many were published."""
        async with self.db.read_session() as session:
            rows = (await session.execute(select(OUTBOX).order_by(OUTBOX.c.seq).limit(self.batch_size))).all()
        if not rows:
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
        async with self.db.session() as session, session.begin():
            await session.execute(delete(OUTBOX).where(OUTBOX.c.seq.in_([row.seq for row in rows])))
        RELAYED.labels(self.service).inc(len(rows))
        return len(rows)
