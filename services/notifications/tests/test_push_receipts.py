"""Push receipts (this browser took that push) are pruned once their send is finished and they are older than the
retention, in small batches; those of sends that may still be retried are kept whatever their age."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from gatherly.app.testing import running_gatherly
from gatherly.kernel.testing import DB_BACKENDS
from gatherly.notifications import service, tasks
from gatherly.notifications.domain import Channel, UserId
from gatherly.notifications.store import DeliveryStatus, Stores, reading, unit_of_work
from gatherly.notifications.tables import deliveries

RETENTION = timedelta(days=7)
# The sends here are due only tomorrow: the service's own push sender, at work in the background, leaves the pending
# one pending (polling only hourly was not enough: its first round at start could still meet the send).
DUE_LATER = timedelta(days=1)


async def _receipt(context: Any, name: str, status: str | None, age: timedelta) -> None:
    """A push send `name` in `status` (None: the send row is gone) with one receipt recorded `age` ago."""
    now = context.clock.now()
    async with context.db.writing() as session:
        stores = Stores(session)
        if status is not None:
            await stores.deliveries.add([(name, UserId("u1"), Channel.PUSH)], now)
            await session.execute(
                update(deliveries)
                .where(deliveries.c.id == f"{name}:push")
                .values(status=status, next_attempt_at=now + DUE_LATER)
            )
        await stores.push.record_delivered(f"{name}:push", "browser", now - age)


async def _receipts(context: Any) -> set[str]:
    async with reading(context.db) as stores:
        return {delivery for delivery, _ in await stores.push.receipts()}


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_old_receipts_of_finished_sends_go_in_small_batches_and_the_others_stay(
    tmp_path: Path, database_backend: str
) -> None:
    async with running_gatherly(tmp_path, ["notifications"], database_backend=database_backend) as running:
        context = running.process.host("notifications").context
        old, new = RETENTION + timedelta(hours=1), RETENTION - timedelta(hours=1)
        for n in range(5):
            await _receipt(context, f"sent-{n}", DeliveryStatus.SENT, old)
        await _receipt(context, "dropped", DeliveryStatus.DROPPED, old)
        await _receipt(context, "gone", None, old)  # its send was erased with its person
        await _receipt(context, "pending", DeliveryStatus.PENDING, old)  # may still be retried: keep
        await _receipt(context, "failed", DeliveryStatus.FAILED, old)  # an operator may retry it: keep
        await _receipt(context, "recent", DeliveryStatus.SENT, new)

        rounds = []
        while (pruned := await service.prune_push_receipts(unit_of_work(context), RETENTION, 3)) > 0:
            rounds.append(pruned)
        assert rounds == [3, 3, 1], "seven receipts, three at a time"
        assert await _receipts(context) == {"pending:push", "failed:push", "recent:push"}


def test_the_service_prunes_receipts_with_its_other_background_work() -> None:
    from gatherly.notifications import SERVICE

    assert tasks.prune_push_receipts in SERVICE.tasks
