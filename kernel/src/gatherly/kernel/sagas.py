"""Saga state in the kernel's `sagas` table, read and written inside a service's unit of work, so a saga's steps
commit together with the state they change and the events they publish. Statuses and steps are the service's
own vocabulary (strings here); `deadline_at` is when a pending saga counts as stuck."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update

from gatherly.kernel.db import Executor, rowcount
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

    async def get(self, saga_id: str) -> SagaState | None:
        query = select(SAGAS).where(SAGAS.c.id == saga_id, SAGAS.c.kind == self.kind)
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

    async def overdue(self, now: datetime, limit: int = 100) -> list[SagaState]:
        """Pending sagas past their deadline, oldest deadline first (ix_sagas_status_deadline)."""
        query = (
            select(SAGAS)
            .where(SAGAS.c.kind == self.kind, SAGAS.c.status == PENDING, SAGAS.c.deadline_at <= now)
            .order_by(SAGAS.c.deadline_at)
            .limit(limit)
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


def _state(row: RowMapping) -> SagaState:
    return SagaState(
        id=row["id"],
        status=row["status"],
        step=row["step"],
        data=dict(row["data"]),
        reason=row["reason"],
        deadline_at=row["deadline_at"],
    )
