"""A ledger process for crash tests; the test SIGKILLs it mid-stream.

python ledger_process.py consume LOG DB TOPIC_SUFFIX GROUP       apply deposits until stopped
python ledger_process.py consume-and-stall LOG DB TOPIC_SUFFIX GROUP
    like consume, but after its second batch is applied it says so and stalls before committing offsets
python ledger_process.py produce LOG DB TOPIC_SUFFIX COUNT       commit COUNT deposits (state + outbox) and relay
python ledger_process.py relay LOG DB TOPIC_SUFFIX               relay what the outbox still holds, then exit
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from ledger import Deposit, LedgerUnitOfWork, apply_deposit, create_schema, deposit_event

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerRegistry, ConsumerWorker, RetryPolicy, replay_dead_letters
from gatherly.kernel.log.base import OutgoingMessage, Record, TopicConfig
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.relay import OutboxRelay
from gatherly.kernel.uow import OutboxSignal


class StallingWorker(ConsumerWorker):
    """Stops in the worst place for a crash: records applied and committed in the database, offsets not yet."""

    batches = 0

    async def handle_batch(self, records: Sequence[Record]) -> None:
        await super().handle_batch(records)
        self.batches += 1
        if self.batches == 2:
            print("applied, offsets not committed", flush=True)
            await asyncio.sleep(3600)


class StallingAfterParking(ConsumerWorker):
    """Stops in the worst place while dead-lettering: the third poison record parked, its offset not committed."""

    parked = 0

    async def park(self, record: Record, error: BaseException, attempts: int) -> None:
        self.parked += 1
        if self.parked == 3:

            async def stall(*_: object) -> None:
                print("parked, offset not committed", flush=True)
                await asyncio.sleep(3600)

            self._commit = stall  # type: ignore[method-assign]
        await super().park(record, error, attempts)


async def refuse_tens(event: Deposit, uow: LedgerUnitOfWork) -> None:
    """Poison for a buggy build: every tenth deposit fails."""
    if event.amount % 10 == 0:
        raise ValueError("a bug for round amounts")
    await apply_deposit(event, uow)


def stall_after_first_redelivery(log: EmbeddedLog) -> None:
    """Stops a replay in the worst place: parked messages redelivered, the replay's progress not committed."""
    publish = log.publish

    async def publish_then_stall(messages: Sequence[OutgoingMessage]) -> None:
        await publish(messages)
        if any(m.topic.startswith("gatherly.redeliver.") for m in messages):
            print("redelivered, progress not committed", flush=True)
            await asyncio.sleep(3600)

    log.publish = publish_then_stall  # type: ignore[method-assign]


async def main(mode: str, log_path: str, db_url: str, suffix: str, extra: str = "") -> None:
    # A short session timeout: a killed member's partitions pass to the next one within two seconds.
    log = EmbeddedLog(Path(log_path), session_timeout=2.0)
    await log.start()
    db = Database(db_url)
    await create_schema(db)
    deposit = deposit_event(suffix)
    await log.ensure_topics([TopicConfig(deposit.TOPIC)])
    if mode in ("consume", "consume-and-stall"):
        registry = ConsumerRegistry()
        registry.on(deposit, group=extra)(apply_deposit)
        (spec,) = registry.specs.values()
        worker_class = StallingWorker if mode == "consume-and-stall" else ConsumerWorker
        worker = worker_class(spec, log, lambda: LedgerUnitOfWork(db), retry=RetryPolicy(), batch_size=200)
        print("ready", flush=True)
        await worker.run()
    elif mode in ("consume-poison", "consume-poison-and-stall"):
        registry = ConsumerRegistry()
        registry.on(deposit, group=extra)(refuse_tens)
        (spec,) = registry.specs.values()
        worker_class = StallingAfterParking if mode == "consume-poison-and-stall" else ConsumerWorker
        retry = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02)
        worker = worker_class(spec, log, lambda: LedgerUnitOfWork(db), retry=retry, batch_size=50)
        print("ready", flush=True)
        await worker.run()
    elif mode == "replay-and-stall":
        stall_after_first_redelivery(log)
        print("ready", flush=True)
        await replay_dead_letters(log, deposit.TOPIC, group=extra)
    elif mode == "produce":
        signal = OutboxSignal()
        relay = OutboxRelay("ledger", db, log, signal, poll_interval=0.05, batch_size=50)
        relay_task = asyncio.create_task(relay.run())
        print("ready", flush=True)
        for amount in range(1, int(extra) + 1):
            async with LedgerUnitOfWork(db, signal=signal) as uow:
                await uow.add(f"acct-{amount % 7}", amount)
                uow.publish(deposit(account=f"acct-{amount % 7}", amount=amount))
        relay.stop()
        await relay_task
    elif mode == "relay":
        relay = OutboxRelay("ledger", db, log, OutboxSignal(), batch_size=50)
        while await relay.relay_once():
            pass
    await db.dispose()
    await log.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
