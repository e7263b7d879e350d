"""The relay on PostgreSQL is woken by any process's commit (the outbox trigger's NOTIFY), not only its own's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger import LedgerUnitOfWork, create_schema, deposit_event

from gatherly.kernel.db import Database
from gatherly.kernel.log.base import MessageLog, TopicConfig
from gatherly.kernel.relay import OutboxRelay
from gatherly.kernel.testing import DB_BACKENDS, scratch_database
from gatherly.kernel.uow import OutboxSignal

from .test_delivery import eventually, outbox_size


async def outbox_emptied(db: Database) -> bool:
    return await outbox_size(db) == 0


if "postgresql" in DB_BACKENDS:  # on SQLite the relay shares its writers' process: their signal wakes it

    async def test_a_commit_from_another_process_wakes_the_relay_at_once(
        message_log: MessageLog, tmp_path: Path
    ) -> None:
        async with scratch_database("postgresql", tmp_path) as url:
            relay_db, writer_db = Database(url), Database(url)  # two pools, as two processes (no shared signal)
            try:
                await create_schema(relay_db)
                deposit = deposit_event()
                await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])

                async def published(count: int) -> bool:
                    return len(await message_log.read(deposit.TOPIC)) == count

                async with LedgerUnitOfWork(writer_db) as uow:
                    uow.publish(deposit(account="ann", amount=1))
                # A poll far longer than the test, and a signal no writer notifies: only NOTIFY can wake it.
                relay = OutboxRelay("ledger", relay_db, message_log, OutboxSignal(), poll_interval=600)
                task = asyncio.create_task(relay.run())
                try:
                    # Its first pass (after it began listening) publishes what was there; then it waits.
                    await eventually(lambda: published(1), timeout=30)
                    for amount in (2, 3):
                        async with LedgerUnitOfWork(writer_db) as uow:
                            uow.publish(deposit(account="ann", amount=amount))
                        await eventually(lambda n=amount: published(n), timeout=30)  # well under the poll
                    # The relay deletes a row after its publish returns: a reader of the log may see it first.
                    await eventually(lambda: outbox_emptied(relay_db), timeout=30)
                finally:
                    relay.stop()
                    await asyncio.wait_for(task, 30)
            finally:
                await relay_db.dispose()
                await writer_db.dispose()
