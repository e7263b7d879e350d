"""Saga state in the kernel's `sagas` table, read and written inside a service's unit of work, so a saga's steps
commit together with the state they change and the events they publish. Statuses and steps are the service's
own vocabulary (strings here); `deadline_at` is when a pending saga counts as stuck. Replies of the services taking
part are kept in `data["replies"]` ({service: {"at": ISO time, ...details}}), which the operators' view shows; and
the functions at the end read every saga of a database for operators (`gatherly sagas`, the sagas gauge)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update

from gatherly.kernel.db import Database, Executor, rowcount
from gatherly.kernel.metrics import SAGAS as SAGAS_GAUGE
from gatherly.kernel.tables import KERNEL_METADATA

SAGAS = KERNEL_METADATA.tables["sagas"]
PENDING = "pending"


@dataclass(frozen=True)
class SagaState:
    id: str
    status: str
    step: str
    data: dict[str, Any]
    reason: str | None
    deadline_at: datetime | None
    kind: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def replies(self) -> dict[str, dict[str, Any]]:
        """Who answered ({service: {"at": ISO time, ...}}), in the order they did (ties by name: PostgreSQL's
        JSONB keeps no key order, so the times say it)."""
        replies: dict[str, dict[str, Any]] = self.data.get("replies", {})
        return dict(sorted(replies.items(), key=lambda item: (str(item[1].get("at", "")), item[0])))


class SagaStore:
    """The sagas of one kind (e.g. "group_deletion")."""

    def __init__(self, session: Executor, kind: str) -> None:
        self.session = session
        self.kind = kind

    async def start(
        self, saga_id: str, *, step: str, data: dict[str, Any], deadline_at: datetime | None, now: datetime
    ) -> None:
        await self.session.execute(
            insert(SAGAS).values(
                id=saga_id,
                kind=self.kind,
                status=PENDING,
                step=step,
                data=data,
                reason=None,
                deadline_at=deadline_at,
                created_at=now,
                updated_at=now,
            )
        )

    async def get(self, saga_id: str, *, for_update: bool = False) -> SagaState | None:
        """The saga; with `for_update` its row stays locked until the transaction ends (PostgreSQL; SQLite's writer
        is alone anyway), so replies committed by concurrent consumers are not lost nor counted twice."""
        query = select(SAGAS).where(SAGAS.c.id == saga_id, SAGAS.c.kind == self.kind)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return _state(row) if row else None

    async def latest_with(self, key: str, value: str) -> SagaState | None:
        """The newest saga whose `data[key]` is `value` (not indexed: for rare lookups)."""
        query = (
            select(SAGAS)
            .where(SAGAS.c.kind == self.kind, SAGAS.c.data[key].as_string() == value)
            .order_by(SAGAS.c.created_at.desc())
            .limit(1)
        )
        row = (await self.session.execute(query)).mappings().first()
        return _state(row) if row else None

    async def started_with(self, key: str, value: str, since: datetime) -> list[SagaState]:
        """The sagas whose `data[key]` is `value` started after `since`, newest first (not indexed by `key`:
        for lookups a person makes now and then, such as counting their requests of a day)."""
        query = (
            select(SAGAS)
            .where(SAGAS.c.kind == self.kind, SAGAS.c.data[key].as_string() == value, SAGAS.c.created_at > since)
            .order_by(SAGAS.c.created_at.desc())
        )
        return [_state(row) for row in (await self.session.execute(query)).mappings()]

    async def pending_with(self, key: str, value: str) -> list[SagaState]:
        """The pending sagas whose `data[key]` is `value` (not indexed by `key`: for rare lookups)."""
        query = select(SAGAS).where(
            SAGAS.c.kind == self.kind, SAGAS.c.status == PENDING, SAGAS.c.data[key].as_string() == value
        )
        return [_state(row) for row in (await self.session.execute(query)).mappings()]

    async def overdue(self, now: datetime, limit: int = 100) -> list[SagaState]:
        """Pending sagas past their deadline, oldest deadline first (ix_sagas_status_deadline), locked for the
        caller's transaction. On PostgreSQL those another process is handling right now are skipped (SKIP LOCKED):
        two replicas' timers take different sagas at once, never the same one twice nor waiting for each other."""
        query = (
            select(SAGAS)
            .where(SAGAS.c.kind == self.kind, SAGAS.c.status == PENDING, SAGAS.c.deadline_at <= now)
            .order_by(SAGAS.c.deadline_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_state(row) for row in (await self.session.execute(query)).mappings()]

    async def move(
        self,
        saga_id: str,
        now: datetime,
        *,
        status: str,
        step: str,
        reason: str | None = None,
        deadline_at: datetime | None = None,
        data: dict[str, Any] | None = None,
        only_if_pending: bool = False,
    ) -> bool:
        """Record the saga's new status and step (and deadline and data, when given). With `only_if_pending`, a
        saga that has ended already is left alone. Returns whether a saga was changed."""
        values: dict[str, Any] = {"status": status, "step": step, "reason": reason, "updated_at": now}
        if deadline_at is not None:
            values["deadline_at"] = deadline_at
        if data is not None:
            values["data"] = data
        statement = update(SAGAS).where(SAGAS.c.id == saga_id, SAGAS.c.kind == self.kind)
        if only_if_pending:
            statement = statement.where(SAGAS.c.status == PENDING)
        result = await self.session.execute(statement.values(**values))
        return rowcount(result) == 1

    async def record_reply(
        self, saga_id: str, who: str, at: datetime, now: datetime, details: dict[str, Any] | None = None
    ) -> tuple[SagaState, bool] | None:
        """Record that `who` answered at `at`, once: a repeated reply keeps the first. Also on a saga that has ended
        (a late reply is kept for the operators' view; its status is not changed here). Returns the saga as it now
        is and whether the reply was new, or None when there is no such saga."""
        saga = await self.get(saga_id, for_update=True)
        if saga is None:
            return None
        if who in saga.replies:
            return saga, False
        replies = {**saga.replies, who: {"at": at.isoformat(), **(details or {})}}
        data = {**saga.data, "replies": replies}
        statement = update(SAGAS).where(SAGAS.c.id == saga_id, SAGAS.c.kind == self.kind)
        await self.session.execute(statement.values(data=data, updated_at=now))
        return replace(saga, data=data, updated_at=now), True


# --- every saga of a database, for operators ------------------------------------------------------------------------


async def list_sagas(
    session: Executor, *, status: str | None = None, kind: str | None = None, limit: int = 100
) -> list[SagaState]:
    """The newest sagas first, of one status and kind when given."""
    query = select(SAGAS).order_by(SAGAS.c.created_at.desc(), SAGAS.c.id).limit(limit)
    if status is not None:
        query = query.where(SAGAS.c.status == status)
    if kind is not None:
        query = query.where(SAGAS.c.kind == kind)
    return [_state(row) for row in (await session.execute(query)).mappings()]


async def find_saga(session: Executor, saga_id: str) -> list[SagaState]:
    """The sagas with this id (of any kind: ids are unique per kind only)."""
    query = select(SAGAS).where(SAGAS.c.id == saga_id).order_by(SAGAS.c.kind)
    return [_state(row) for row in (await session.execute(query)).mappings()]


async def count_sagas(session: Executor) -> dict[tuple[str, str], int]:
    """How many sagas there are of each (kind, status)."""
    query = select(SAGAS.c.kind, SAGAS.c.status, func.count()).group_by(SAGAS.c.kind, SAGAS.c.status)
    return {(kind, status): int(n) for kind, status, n in (await session.execute(query)).all()}


SAGA_GAUGE_INTERVAL = 15.0  # seconds; a saga's deadline is minutes to hours, so a fresher count would say nothing new


async def keep_saga_gauge(service: str, db: Database) -> None:
    """Background loop of every service: `gatherly_sagas{service, kind, status}` from its sagas table. A (kind,
    status) no longer present is set to 0 rather than left at its last count."""
    shown: set[tuple[str, str]] = set()
    while True:
        async with db.read_connection() as connection:
            counts = await count_sagas(connection)
        for kind, status in shown | set(counts):
            SAGAS_GAUGE.labels(service, kind, status).set(counts.get((kind, status), 0))
        shown |= set(counts)
        await asyncio.sleep(SAGA_GAUGE_INTERVAL)


def _state(row: RowMapping) -> SagaState:
    return SagaState(
        id=row["id"],
        status=row["status"],
        step=row["step"],
        data=dict(row["data"]),
        reason=row["reason"],
        deadline_at=row["deadline_at"],
        kind=row["kind"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
