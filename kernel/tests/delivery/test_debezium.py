"""The outbox published by Debezium instead of the polling relay: a Kafka Connect worker (one per session) runs the
PostgreSQL connector with the Outbox Event Router (deploy/debezium/outbox-connector.json) on a database of each
test's own; consumers read what it writes exactly as what our relay writes. Needs Kafka and PostgreSQL under test
(GATHERLY_TEST_LOG_BACKENDS=...,kafka and GATHERLY_TEST_DB_BACKENDS=...,postgresql)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ledger import Deposit, LedgerUnitOfWork, create_schema, deposit_event, ledger_consumers, totals
from sqlalchemy import select

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerWorker, RetryPolicy
from gatherly.kernel.kafka_connect import (
    ConnectClient,
    ConnectWorker,
    OutboxConnector,
    drop_slot,
    ensure_publication,
    outbox_connector,
    wait_for_slot,
)
from gatherly.kernel.log.base import Record, TopicConfig
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.messages import Envelope
from gatherly.kernel.testing import DB_BACKENDS, LOG_BACKENDS, scratch_database
from gatherly.kernel.uow import OUTBOX

PARTITIONS = 4
# The session's broker and Connect worker may start within a test (a minute or two each on a busy machine).
pytestmark = pytest.mark.timeout(900)
DEADLINE_S = 300.0  # Connect and Debezium on a busy two-core machine (a restart: a minute or more), not milliseconds


@dataclass
class Outbox:
    """A ledger database whose outbox Debezium publishes, and the session's broker."""

    db: Database
    url: str
    log: KafkaLog
    connector: OutboxConnector


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.1)


async def all_records(log: KafkaLog, topic: str) -> list[Record]:
    ends = await log.end_offsets(topic)
    records: list[Record] = []
    for tp, end in ends.items():
        offset = 0
        while offset < end:
            batch = [r for r in await log.read(topic, {tp.partition: offset}) if r.partition == tp.partition]
            records += batch
            offset = batch[-1].offset + 1 if batch else end
    return records


async def publish(db: Database, deposit: type[Deposit], accounts: list[str], amount: int = 1) -> None:
    async with LedgerUnitOfWork(db) as uow:
        for account in accounts:
            await uow.add(account, amount)
            uow.publish(deposit(account=account, amount=amount))


async def published_at_least(log: KafkaLog, topic: str, count: int) -> bool:
    return sum((await log.end_offsets(topic)).values()) >= count


def consumer(outbox: Outbox, deposit: type[Deposit]) -> ConsumerWorker:
    (spec,) = ledger_consumers(deposit, f"ledger.{uuid.uuid4().hex[:8]}").specs.values()
    retry = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)
    return ConsumerWorker(spec, outbox.log, lambda: LedgerUnitOfWork(outbox.db), retry=retry)


if "kafka" in LOG_BACKENDS and "postgresql" in DB_BACKENDS:

    @pytest.fixture
    async def outbox(kafka_connect: ConnectWorker, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Outbox]:
        async with scratch_database("postgresql", tmp_path) as url:
            db = Database(url)
            await create_schema(db)
            await ensure_publication(url)
            connector = outbox_connector(f"ledger-{uuid.uuid4().hex[:8]}", url)
            log = KafkaLog(kafka_bootstrap, session_timeout=3.0, request_timeout=30.0)
            await log.start()
            async with ConnectClient(kafka_connect.url) as connect:
                await connect.put(connector)
                await wait_for_slot(url, connector.slot)
                try:
                    yield Outbox(db, url, log, connector)
                finally:
                    await log.close()
                    await connect.delete(connector.name)
                    await drop_slot(url, connector.slot)  # else the database cannot be dropped
                    await db.dispose()

    async def test_an_event_committed_in_a_unit_of_work_reaches_its_consumer_through_debezium_once(
        outbox: Outbox,
    ) -> None:
        deposit = deposit_event()
        await outbox.log.ensure_topics([TopicConfig(deposit.TOPIC, partitions=PARTITIONS)])
        worker = consumer(outbox, deposit)
        task = asyncio.create_task(worker.run())
        try:
            await publish(outbox.db, deposit, ["ann", "bob"], amount=5)
            # Only Debezium publishes here (no relay runs): the consumer's ledger gets both deposits, once each.

            async def both_applied() -> bool:
                return (await totals(outbox.db))[1] == 4  # 2 made by the unit of work + 2 by the consumer

            await eventually(both_applied, "both deposits applied by the consumer")
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
        assert await totals(outbox.db) == (20, 4)

        # What Debezium wrote is what our relay would have written: the envelope's headers, the payload as the value
        # and the aggregate id as the key.
        async with outbox.db.read_session() as session:
            rows = {row.id: row for row in (await session.execute(select(OUTBOX))).all()}
        records = await all_records(outbox.log, deposit.TOPIC)
        assert sorted(r.headers["id"] for r in records) == sorted(rows)
        applied = Counter[str]()
        for record in records:
            row = rows[record.headers["id"]]
            envelope = Envelope.from_record(record)
            applied[envelope.aggregate_id] += 1
            assert record.key == row.aggregateid == envelope.aggregate_id
            assert envelope.type == deposit.TYPE and envelope.schema_version == 1
            assert envelope.aggregate_type == deposit.TOPIC
            assert envelope.payload == row.payload
            assert envelope.occurred_at == row.occurred_at
            assert envelope.correlation_id == row.correlation_id
            assert isinstance(envelope.event(), deposit)
        assert applied == {"ann": 1, "bob": 1}

    async def test_a_key_lands_on_the_same_partition_through_debezium_and_through_our_producer(
        outbox: Outbox,
    ) -> None:
        # Kafka Connect's Java producer partitions by murmur2 of the key, as our producer does: an aggregate's events
        # stay in one partition, in order, whichever relay published them (and while switching from one to the other).
        deposit = deposit_event()
        await outbox.log.ensure_topics([TopicConfig(deposit.TOPIC, partitions=PARTITIONS)])
        accounts = [f"account-{n}" for n in range(24)]
        await publish(outbox.db, deposit, accounts)

        async def all_through_debezium() -> bool:
            return sum((await outbox.log.end_offsets(deposit.TOPIC)).values()) == len(accounts)

        await eventually(all_through_debezium, "every deposit published by Debezium")
        by_debezium = {r.key: r.partition for r in await all_records(outbox.log, deposit.TOPIC)}
        debezium_ends = {tp.partition: end for tp, end in (await outbox.log.end_offsets(deposit.TOPIC)).items()}
        await outbox.log.publish(
            [Envelope.wrap(deposit(account=a, amount=1), datetime.now(UTC)).to_message() for a in accounts]
        )
        ours = {
            r.key: r.partition
            for r in await all_records(outbox.log, deposit.TOPIC)
            if r.offset >= debezium_ends[r.partition]
        }
        assert set(by_debezium) == set(ours) == set(accounts)
        assert ours == by_debezium
        assert len(set(by_debezium.values())) > 1  # the keys did spread: the check compared real choices

    async def test_a_connect_worker_killed_mid_stream_loses_nothing_and_its_repeats_are_applied_once(
        outbox: Outbox, kafka_connect: ConnectWorker
    ) -> None:
        deposit = deposit_event()
        await outbox.log.ensure_topics([TopicConfig(deposit.TOPIC, partitions=PARTITIONS)])
        worker = consumer(outbox, deposit)
        task = asyncio.create_task(worker.run())
        batches, per_batch = 40, 5
        try:

            async def produce() -> None:
                for n in range(batches):
                    await publish(outbox.db, deposit, [f"acc-{n}-{k}" for k in range(per_batch)])
                    await asyncio.sleep(0.05)

            producing = asyncio.create_task(produce())
            # Mid-stream: some records are out, and Connect dies without committing its latest source offsets.
            await eventually(
                lambda: published_at_least(outbox.log, deposit.TOPIC, per_batch * 4), "the first records out"
            )
            await asyncio.to_thread(kafka_connect.kill)
            await producing  # committed while no Debezium runs: the replication slot keeps them
            await asyncio.to_thread(kafka_connect.start)
            async with ConnectClient(kafka_connect.url) as connect:
                await connect.wait_running(outbox.connector.name)
            total = batches * per_batch

            async def all_applied() -> bool:
                return (await totals(outbox.db))[1] == 2 * total

            try:
                await eventually(all_applied, f"all {total} deposits applied")
            except AssertionError:
                async with ConnectClient(kafka_connect.url) as connect:
                    status = await connect.status(outbox.connector.name)
                applied = (await totals(outbox.db))[1] - total
                on_topic = len(await all_records(outbox.log, deposit.TOPIC))
                raise AssertionError(f"{applied} of {total} applied, {on_topic} records; connector: {status}") from None
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
        records = await all_records(outbox.log, deposit.TOPIC)
        ids = Counter(r.headers["id"] for r in records)
        repeats = sum(ids.values()) - len(ids)
        print(f"Connect killed mid-stream: {len(records)} records for {total} events, {repeats} sent again")
        assert len(ids) == total  # nothing lost
        assert await totals(outbox.db) == (2 * total, 2 * total)  # and each applied once, repeats or not
