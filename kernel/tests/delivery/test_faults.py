"""Issue #7 regressions: each fault path of delivery (findings 1-7, 9, 11) and the fault-injection cases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from ledger import Deposit, LedgerUnitOfWork, apply_deposit, deposit_event, ledger_consumers, totals
from prometheus_client import REGISTRY
from sqlalchemy import exc as sa_exc
from test_delivery import FAST_RETRY, Running, caught_up, eventually, group_name, publish_deposits, worker_for

from gatherly.kernel.db import Database
from gatherly.kernel.delivery import (
    ConsumerRegistry,
    dead_letter_topic,
    rebuild_group,
    redelivery_topic,
    replay_dead_letters,
)
from gatherly.kernel.log.base import GroupNotEmpty, LogConsumer, MessageLog, TopicConfig, TopicPartition, partition_for
from gatherly.kernel.supervision import Backoff, Supervisor
from gatherly.kernel.testing import DB_BACKENDS
from gatherly.kernel.uow import INBOX


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def locked() -> sa_exc.OperationalError:
    """What SQLAlchemy raises while another connection holds SQLite's write lock (or PostgreSQL is down)."""
    return sa_exc.OperationalError("INSERT ...", {}, Exception("database is locked"))


async def parked(message_log: MessageLog, topic: str) -> int:
    return len(await message_log.read(dead_letter_topic(topic)))


# -- finding 1: supervision ---------------------------------------------------------------------------------


async def test_a_task_that_fails_is_restarted_counted_and_turns_readiness_red_while_down() -> None:
    supervisor = Supervisor("svc-1", backoff=Backoff(initial=0.01, maximum=0.02, healthy_after=0.2), unready_after=0.1)
    runs = {"n": 0, "fail_until": 1_000_000}
    healthy = asyncio.Event()

    async def work() -> None:
        runs["n"] += 1
        if runs["n"] < runs["fail_until"]:
            raise OSError("log unavailable")
        healthy.set()
        await asyncio.Event().wait()

    task = supervisor.start("consumer g", work)
    try:
        await eventually(lambda: _true(runs["n"] >= 3))
        assert metric("gatherly_worker_restarts_total", service="svc-1", task="consumer g") >= 2
        await eventually(lambda: _true(supervisor.down_too_long() == ["consumer g"]))
        with pytest.raises(RuntimeError, match="consumer g"):
            await supervisor.check()
        runs["fail_until"] = 0  # the database is back
        await asyncio.wait_for(healthy.wait(), 5)
        await eventually(lambda: _true(supervisor.down_too_long() == []))
        await supervisor.check()
    finally:
        task.cancel()


async def test_one_failure_followed_by_a_steady_run_does_not_turn_readiness_red() -> None:
    # healthy_after (when the failure count resets) is longer than unready_after: a task that failed once and
    # has since run steadily for unready_after is up, not "down since its failure".
    supervisor = Supervisor(
        "svc-once", backoff=Backoff(initial=0.01, maximum=0.01, healthy_after=60), unready_after=0.2
    )
    runs = {"n": 0}
    steady = asyncio.Event()

    async def work() -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            raise OSError("database is locked")
        steady.set()
        await asyncio.Event().wait()

    task = supervisor.start("relay", work)
    try:
        await asyncio.wait_for(steady.wait(), 5)
        for _ in range(8):  # 0.4 s: twice unready_after past the failure, far short of healthy_after
            assert supervisor.down_too_long() == []
            await asyncio.sleep(0.05)
        await supervisor.check()
    finally:
        task.cancel()


async def test_stopping_ends_a_task_waiting_out_its_backoff_at_once() -> None:
    supervisor = Supervisor("svc-stop", backoff=Backoff(initial=60, maximum=60))
    failed = asyncio.Event()

    async def work() -> None:
        failed.set()
        raise OSError("down")

    task = supervisor.start("relay", work)
    await asyncio.wait_for(failed.wait(), 5)
    supervisor.stop()
    await asyncio.wait_for(task, 1)


async def _true(value: bool) -> bool:
    return value


async def test_a_worker_whose_commit_failed_once_goes_on_applying_later_messages(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    worker = worker_for(ledger_consumers(deposit, group_name()), message_log, ledger_db)
    supervisor = Supervisor("svc-commit", backoff=Backoff(initial=0.01, maximum=0.05))
    failed = {"once": False}
    real_consumer = message_log.consumer

    def flaky_consumer(*args: object, **kwargs: object) -> LogConsumer:
        consumer = real_consumer(*args, **kwargs)  # type: ignore[arg-type]
        commit = consumer.commit

        async def commit_failing_once(offsets: object) -> None:
            if not failed["once"]:
                failed["once"] = True
                raise OSError("log unavailable during commit")
            await commit(offsets)  # type: ignore[arg-type]

        consumer.commit = commit_failing_once  # type: ignore[method-assign]
        return consumer

    message_log.consumer = flaky_consumer  # type: ignore[method-assign]
    await publish_deposits(message_log, deposit, [1])
    task = supervisor.start("consumer", worker.run)
    try:
        await eventually(lambda: _true(failed["once"]))
        await publish_deposits(message_log, deposit, [2])
        await eventually(lambda: _equal(totals(ledger_db), (3, 2)))
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


# -- finding 2: infrastructure errors are retried without limit, never parked; unknown types skipped ---------


async def test_a_database_outage_parks_nothing_and_keeps_each_keys_order(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    seen: list[int] = []
    outage_until = time.monotonic() + 1.5  # longer than all of FAST_RETRY's attempts together

    async def during_an_outage(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if time.monotonic() < outage_until:
            raise locked()
        seen.append(event.amount)
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group_name())(during_an_outage)
    await publish_deposits(message_log, deposit, [1, 2, 3, 4])
    async with Running(worker_for(registry, message_log, ledger_db)):
        await eventually(lambda: _equal(totals(ledger_db), (10, 4)))
    assert seen == [1, 2, 3, 4]
    assert await parked(message_log, deposit.TOPIC) == 0


async def test_an_event_type_the_group_does_not_handle_is_skipped_and_counted_not_parked(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    newer = deposit_event(topic=deposit.TOPIC)
    group = group_name()
    await publish_deposits(message_log, newer, [100])
    await publish_deposits(message_log, deposit, [5])
    async with Running(worker_for(ledger_consumers(deposit, group), message_log, ledger_db)):
        await eventually(lambda: _equal(totals(ledger_db), (5, 1)))
    assert metric("gatherly_messages_skipped_total", consumer=group, type=newer.TYPE) == 1
    assert await parked(message_log, deposit.TOPIC) == 0


# Embedded only: the six records are appended before the worker starts, so its first poll brings them all.
@pytest.mark.parametrize("message_log", ["embedded"], indirect=True)
async def test_records_a_group_skips_among_those_it_handles_share_their_transaction_and_are_counted_once(
    ledger_db: Database, message_log: MessageLog
) -> None:
    # Most groups read a topic for a few of its types: the records they skip must not cost the others their batch
    # (one transaction for the poll, not one per record), nor be counted twice.
    from datetime import UTC, datetime

    from gatherly.kernel.messages import Envelope

    deposit = deposit_event()
    other = deposit_event(topic=deposit.TOPIC)
    group = group_name()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    events = [kind(account="ann", amount=amount) for amount in [1, 2, 3] for kind in (deposit, other)]
    await message_log.publish([Envelope.wrap(event, datetime.now(UTC)).to_message() for event in events])
    worker = worker_for(ledger_consumers(deposit, group), message_log, ledger_db)
    transactions = 0

    class CountingTransactions(LedgerUnitOfWork):
        # Counted when entered, not when built: the worker also builds one to ask its database's records per poll.
        async def __aenter__(self) -> CountingTransactions:
            nonlocal transactions
            transactions += 1
            return await super().__aenter__()

    worker.uow_factory = lambda: CountingTransactions(ledger_db)
    async with Running(worker):
        await eventually(lambda: _equal(totals(ledger_db), (6, 3)))
        await eventually(lambda: caught_up(message_log, group, deposit.TOPIC))
    assert transactions == 1
    assert metric("gatherly_messages_skipped_total", consumer=group, type=other.TYPE) == 3
    assert metric("gatherly_messages_handled_total", consumer=group, outcome="skipped") == 3
    assert metric("gatherly_messages_handled_total", consumer=group, outcome="ok") == 3
    assert await parked(message_log, deposit.TOPIC) == 0


# -- finding 3: a failing record holds back only its own partition -------------------------------------------


# Embedded only for now: on Kafka its 0.9 s bound includes the group forming and a new topic's first produce
# retries (1.3-2.8 s on the shared 2-core machine), which says nothing about one partition holding back another.
@pytest.mark.parametrize("message_log", ["embedded"], indirect=True)
async def test_a_failing_record_does_not_hold_back_other_partitions(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    bad_key = "bad"
    good_key = next(f"good-{i}" for i in range(100) if partition_for(f"good-{i}", 4) != partition_for(bad_key, 4))
    slow = FAST_RETRY.__class__(max_attempts=3, initial_delay=1.0, max_delay=2.0)  # 3 s of retries in all

    async def refuse_bad(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if event.account == bad_key:
            raise ValueError("a bug for this account")
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group_name())(refuse_bad)
    await publish_deposits(message_log, deposit, [1, 2], account=bad_key)
    started = time.monotonic()
    await publish_deposits(message_log, deposit, [7], account=good_key)
    async with Running(worker_for(registry, message_log, ledger_db, retry=slow)):
        await eventually(lambda: _equal(totals(ledger_db), (7, 1)))
        waited = time.monotonic() - started
        await eventually(lambda: _equal(parked(message_log, deposit.TOPIC), 2), timeout=20)
    assert waited < 0.9, f"the good record waited {waited:.2f}s behind another partition's retries"


# -- finding 4: dead-letter topics keep their records forever ------------------------------------------------


# Embedded only: Kafka enforces retention itself (its DLQ topics' retention.ms=-1: app/tests/test_kafka_init.py).
@pytest.mark.parametrize("message_log", ["embedded"], indirect=True)
async def test_dead_letter_topics_are_created_with_unlimited_retention(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    worker = worker_for(ledger_consumers(deposit, group_name()), message_log, ledger_db)
    await worker.ensure_topics()
    enforce = getattr(message_log, "enforce_retention", None)
    assert enforce is not None
    await message_log.publish(
        [
            type(message)(dead_letter_topic(deposit.TOPIC), message.key, message.value, message.headers)
            for message in [(await publish_deposits(message_log, deposit, [1]))[0].to_message()]
        ]
    )
    from datetime import timedelta

    from gatherly.kernel.log.base import utcnow

    await enforce(now=utcnow() + timedelta(days=3650))
    assert await parked(message_log, deposit.TOPIC) == 1


# -- finding 5: replay is bounded, redelivers to the parking group only, parks again if it still fails --------


async def test_replaying_a_message_that_still_fails_parks_it_again_once_and_only_its_group_sees_it(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    group, bystander = group_name(), group_name()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    from datetime import UTC, datetime

    from gatherly.kernel.log.base import OutgoingMessage
    from gatherly.kernel.messages import Envelope

    bad = Envelope.wrap(deposit(account="ann", amount=1), datetime.now(UTC)).to_message()
    await message_log.publish([OutgoingMessage(bad.topic, bad.key, b"not json", bad.headers)])
    seen_by_bystander: list[int] = []

    async def bystander_handler(event: Deposit, uow: LedgerUnitOfWork) -> None:
        seen_by_bystander.append(event.amount)

    others = ConsumerRegistry()
    others.on(deposit, group=bystander)(bystander_handler)
    worker = worker_for(ledger_consumers(deposit, group), message_log, ledger_db)
    async with Running(worker), Running(worker_for(others, message_log, ledger_db)):
        await eventually(lambda: _equal(parked(message_log, deposit.TOPIC), 2))  # each group parked it once
        assert await replay_dead_letters(message_log, deposit.TOPIC, group=group) == 1
        await eventually(lambda: _equal(parked(message_log, deposit.TOPIC), 3))
        # A second pass replays only what was parked before it began: the re-parked copy, once.
        assert await replay_dead_letters(message_log, deposit.TOPIC, group=group) == 1
        await eventually(lambda: _equal(parked(message_log, deposit.TOPIC), 4))
    redelivered = await message_log.read(redelivery_topic(group))
    assert len(redelivered) == 2
    assert await message_log.read(redelivery_topic(bystander)) == []
    assert seen_by_bystander == []
    dead = await message_log.read(dead_letter_topic(deposit.TOPIC))
    assert [d.headers["dlq.consumer_group"] for d in dead].count(group) == 3


# -- finding 6: a rebuild refuses before deleting the inbox while the group runs ------------------------------


async def test_rebuilding_a_running_group_is_refused_before_the_inbox_is_touched(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    group = group_name()
    await publish_deposits(message_log, deposit, [3])
    async with Running(worker_for(ledger_consumers(deposit, group), message_log, ledger_db)):
        await eventually(lambda: _equal(totals(ledger_db), (3, 1)))
        with pytest.raises(GroupNotEmpty):
            await rebuild_group(ledger_db, message_log, group, [deposit.TOPIC])
        assert await inbox_rows(ledger_db, group) == 1


async def inbox_rows(db: Database, group: str) -> int:
    from sqlalchemy import func, select

    async with db.read_session() as session:
        return int(await session.scalar(select(func.count()).where(INBOX.c.consumer == group)) or 0)


# -- finding 7: heartbeats do not depend on handler time ------------------------------------------------------


# Embedded only: aiokafka rebalances in the background, so there a newcomer takes its share even from a busy member;
# the Kafka form of this promise (a busy member stays in the group and its commit is accepted) is in test_kafka.py.
@pytest.mark.parametrize("message_log", ["embedded"], indirect=True)
async def test_a_slow_handler_keeps_its_partitions_and_its_commit_is_accepted(message_log: MessageLog) -> None:
    topic = f"slow-{group_name()}"
    await message_log.ensure_topics([TopicConfig(topic, partitions=2)])
    session_timeout = float(getattr(message_log, "session_timeout", 10.0))
    slow, newcomer = message_log.consumer("g-slow", [topic]), message_log.consumer("g-slow", [topic])
    everything = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    try:
        assert await slow.assignment() == everything
        newcomer_got: set[TopicPartition] = set()
        deadline = time.monotonic() + 2 * session_timeout
        while time.monotonic() < deadline:  # the slow member is "in a handler": it does not poll
            newcomer_got |= await newcomer.assignment()
            await asyncio.sleep(0.05)
        assert newcomer_got == set()
        await slow.commit({TopicPartition(topic, 0): 0})
    finally:
        await slow.close()
        await newcomer.close()


# -- finding 11: the unit of work ---------------------------------------------------------------------------


async def test_publishing_outside_the_unit_of_work_raises(ledger_db: Database) -> None:
    deposit = deposit_event()
    with pytest.raises(RuntimeError, match="inside `async with"):
        LedgerUnitOfWork(ledger_db).publish(deposit(account="ann", amount=1))


async def test_nesting_a_unit_of_work_raises_instead_of_splitting_its_transaction(ledger_db: Database) -> None:
    uow = LedgerUnitOfWork(ledger_db)
    with pytest.raises(RuntimeError, match="already open"):
        async with uow:
            await uow.add("ann", 1)
            async with uow:
                await uow.add("ann", 2)
    assert await totals(ledger_db) == (0, 0)


_unused: Callable[..., object] = apply_deposit


# -- metrics ------------------------------------------------------------------------------------------------


async def test_lag_per_partition_and_dead_letter_counts_are_exported(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    group = group_name()
    outage = {"on": True}

    async def stuck_while_down(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if outage["on"] and event.account == "stuck":
            raise locked()
        if event.amount == 13:
            raise ValueError("a bug")
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group)(stuck_while_down)
    await publish_deposits(message_log, deposit, [1, 2], account="stuck")
    await publish_deposits(message_log, deposit, [13], account="other")
    stuck = str(partition_for("stuck", 4))

    def lag() -> float:
        return metric("gatherly_consumer_lag", group=group, topic=deposit.TOPIC, partition=stuck)

    async with Running(worker_for(registry, message_log, ledger_db)):
        dlq = dead_letter_topic(deposit.TOPIC)
        await eventually(lambda: _true(metric("gatherly_dlq_records", topic=dlq) == 1))
        await eventually(lambda: _true(lag() == 2))
        outage["on"] = False
        await eventually(lambda: _true(lag() == 0))
    assert await totals(ledger_db) == (3, 2)


# -- fault injection on the real database ---------------------------------------------------------------------


class DatabaseOutage:
    """Makes the ledger database fail for real for `seconds`: on SQLite another connection holds the write lock
    for longer than a writer waits for it (cut to 0.3 s here), so writes fail with "database is locked"; on
    PostgreSQL every other backend of the database is terminated again and again (connections drop
    mid-transaction)."""

    def __init__(self, db: Database, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
        self.db, self.seconds = db, seconds
        self.begun = asyncio.Event()
        if db.is_sqlite:
            from gatherly.kernel import inline_sqlite

            monkeypatch.setattr(inline_sqlite.begin_immediate, "__kwdefaults__", {"timeout": 0.3})
            # The kept writer's BEGIN (Database.writing) waits in its own function.
            monkeypatch.setattr(inline_sqlite.begin_immediate_now, "__kwdefaults__", {"timeout": 0.3})

    async def run(self) -> None:
        if self.db.is_sqlite:
            import sqlite3

            path = self.db.engine.url.database
            assert path is not None
            other = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            # From a thread: the worker holding the lock right now needs the loop to finish its transaction.
            await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
            self.begun.set()
            try:
                await asyncio.sleep(self.seconds)
            finally:
                other.execute("COMMIT")
                other.close()
            return
        from sqlalchemy import text

        admin = Database(self.db.engine.url.render_as_string(hide_password=False))
        try:
            deadline = time.monotonic() + self.seconds
            self.begun.set()
            while time.monotonic() < deadline:
                async with admin.engine.connect() as connection:
                    await connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            # The service's connections only: an autovacuum worker in the scratch database is a
                            # superuser process that this role may not terminate (the test failed when one ran).
                            " AND backend_type = 'client backend'"
                        )
                    )
                await asyncio.sleep(0.02)
        finally:
            await admin.dispose()


async def test_a_database_down_for_seconds_loses_nothing_applies_nothing_twice_parks_nothing(
    ledger_db: Database, message_log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    deposit = deposit_event()
    group = group_name()
    amounts = list(range(1, 201))

    async def slowly(event: Deposit, uow: LedgerUnitOfWork) -> None:
        await apply_deposit(event, uow)
        await asyncio.sleep(0.005)  # inside the transaction, so the outage lands mid-transaction too

    registry = ConsumerRegistry()
    registry.on(deposit, group=group)(slowly)
    retries_before = metric("gatherly_infrastructure_retries_total", consumer=group)
    await publish_deposits(message_log, deposit, amounts[:50])
    async with Running(worker_for(registry, message_log, ledger_db)):
        await eventually(lambda: _applied_some(ledger_db))
        outage = DatabaseOutage(ledger_db, 3.0, monkeypatch)
        running_outage = asyncio.create_task(outage.run())
        await asyncio.wait_for(outage.begun.wait(), 30)
        await publish_deposits(message_log, deposit, amounts[50:])
        await running_outage
        await eventually(lambda: _equal(totals(ledger_db), (sum(amounts), len(amounts))), timeout=60)
    assert metric("gatherly_infrastructure_retries_total", consumer=group) > retries_before, "no fault was hit"
    assert await parked(message_log, deposit.TOPIC) == 0


if "postgresql" in DB_BACKENDS:  # SQLite connections are not cut by a server; the pre-ping is a PostgreSQL pool's

    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    async def test_a_consumer_connection_cut_between_polls_is_retried_on_a_new_one_nothing_twice_nothing_parked(
        ledger_db: Database, message_log: MessageLog
    ) -> None:
        # Consumers' transactions run without the pool's pre-ping (Database.writing): the dead connection surfaces as
        # an error, not as a transparent reconnect, and must be classed as infrastructure.
        deposit = deposit_event()
        group = group_name()
        registry = ConsumerRegistry()
        registry.on(deposit, group=group)(apply_deposit)
        retries_before = metric("gatherly_infrastructure_retries_total", consumer=group)
        await publish_deposits(message_log, deposit, [1])
        async with Running(worker_for(registry, message_log, ledger_db)):
            await eventually(lambda: _equal(totals(ledger_db), (1, 1)))
            await terminate_other_backends(ledger_db)  # the worker's idle pooled connection among them
            await publish_deposits(message_log, deposit, [2])
            await eventually(lambda: _equal(totals(ledger_db), (3, 2)))
        retries = metric("gatherly_infrastructure_retries_total", consumer=group)
        assert retries > retries_before, "no dead connection met"
        assert await parked(message_log, deposit.TOPIC) == 0


async def terminate_other_backends(db: Database) -> None:
    """Terminate every client connection to `db`'s database but this one, and wait until they are gone."""
    from sqlalchemy import text

    others = (
        " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
    )
    admin = Database(db.engine.url.render_as_string(hide_password=False))
    try:
        async with admin.engine.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(pid)" + others))
            await connection.commit()
            deadline = time.monotonic() + 30
            while await connection.scalar(text("SELECT count(*)" + others)):
                await connection.rollback()  # a new snapshot of pg_stat_activity
                assert time.monotonic() < deadline, "the terminated backends did not exit"
                await asyncio.sleep(0.02)
    finally:
        await admin.dispose()


def _applied_some(db: Database) -> Awaitable[bool]:
    async def check() -> bool:
        return (await totals(db))[1] > 0

    return check()


async def test_parking_while_the_log_is_unavailable_waits_and_keeps_order(
    ledger_db: Database, message_log: MessageLog
) -> None:
    deposit = deposit_event()
    group = group_name()
    unavailable_until = time.monotonic() + 1.0
    publish = message_log.publish

    async def flaky_publish(messages: object) -> None:
        if time.monotonic() < unavailable_until:
            from gatherly.kernel.log.base import LogUnavailable

            raise LogUnavailable("log unreachable")
        await publish(messages)  # type: ignore[arg-type]

    async def refuse_thirteen(event: Deposit, uow: LedgerUnitOfWork) -> None:
        if event.amount == 13:
            raise ValueError("thirteen")
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group)(refuse_thirteen)
    await publish_deposits(message_log, deposit, [13, 2])
    message_log.publish = flaky_publish  # type: ignore[method-assign]
    async with Running(worker_for(registry, message_log, ledger_db)):
        await eventually(lambda: _equal(totals(ledger_db), (2, 1)))
        # The record after the poison waited until the poison was safely parked.
        assert time.monotonic() >= unavailable_until
    assert await parked(message_log, deposit.TOPIC) == 1


@pytest.mark.parametrize(
    ("error", "infrastructure"),
    [
        (locked(), True),
        (sa_exc.InterfaceError("SELECT 1", {}, Exception("connection is closed")), True),
        (ConnectionRefusedError("connection refused"), True),
        (TimeoutError(), True),
        (sa_exc.DBAPIError("SELECT 1", {}, Exception("terminating connection"), connection_invalidated=True), True),
        (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("a bug"), False),
        (KeyError("missing"), False),
    ],
)
def test_errors_are_classified_as_infrastructure_or_not(error: BaseException, infrastructure: bool) -> None:
    from gatherly.kernel.delivery import is_infrastructure_error

    assert is_infrastructure_error(error) is infrastructure


def test_an_error_caused_by_an_outage_counts_as_infrastructure() -> None:
    from gatherly.kernel.delivery import is_infrastructure_error

    cause = ConnectionResetError("peer went away")
    error = RuntimeError("handler could not finish")
    error.__cause__ = cause
    assert is_infrastructure_error(error)


# -- found by review after the first pass -----------------------------------------------------------------------


class _Sqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["55P03", "57014", "57P01", "08006"])
def test_lock_and_statement_timeouts_count_as_infrastructure(sqlstate: str) -> None:
    from gatherly.kernel.delivery import is_infrastructure_error

    assert is_infrastructure_error(_Sqlstate(sqlstate))


async def test_a_group_skips_an_unparseable_message_of_a_type_it_does_not_handle(
    ledger_db: Database, message_log: MessageLog
) -> None:
    from datetime import UTC, datetime

    from gatherly.kernel.log.base import OutgoingMessage
    from gatherly.kernel.messages import Envelope

    deposit = deposit_event()
    other = deposit_event(topic=deposit.TOPIC)
    group = group_name()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    foreign = Envelope.wrap(other(account="ann", amount=1), datetime.now(UTC)).to_message()
    await message_log.publish([OutgoingMessage(foreign.topic, foreign.key, b"{not json", foreign.headers)])
    await publish_deposits(message_log, deposit, [4])
    async with Running(worker_for(ledger_consumers(deposit, group), message_log, ledger_db)):
        await eventually(lambda: _equal(totals(ledger_db), (4, 1)))
        await eventually(lambda: caught_up(message_log, group, deposit.TOPIC))
    assert await parked(message_log, deposit.TOPIC) == 0
    assert metric("gatherly_messages_skipped_total", consumer=group, type=other.TYPE) == 1


async def test_a_rebuild_does_not_read_the_redelivery_topic_again(ledger_db: Database, message_log: MessageLog) -> None:
    from datetime import UTC, datetime

    from gatherly.kernel.log.base import OutgoingMessage
    from gatherly.kernel.messages import Envelope

    deposit = deposit_event()
    group = group_name()
    await message_log.ensure_topics([TopicConfig(deposit.TOPIC)])
    bad = Envelope.wrap(deposit(account="ann", amount=1), datetime.now(UTC)).to_message()
    await message_log.publish([OutgoingMessage(bad.topic, bad.key, b"not json", bad.headers)])
    worker = worker_for(ledger_consumers(deposit, group), message_log, ledger_db)
    async with Running(worker):
        await eventually(lambda: _equal(parked(message_log, deposit.TOPIC), 1))
        assert await replay_dead_letters(message_log, deposit.TOPIC, group=group) == 1
        await eventually(lambda: _equal(parked(message_log, deposit.TOPIC), 2))
    await eventually(lambda: _equal(message_log.group_members(group), set()), timeout=30)
    await rebuild_group(ledger_db, message_log, group, [deposit.TOPIC])
    redelivery_end = await message_log.end_offsets(redelivery_topic(group))
    for tp, end in redelivery_end.items():
        assert await message_log.committed(group, tp) == end  # what was redelivered is not applied again
    for tp in await message_log.end_offsets(deposit.TOPIC):
        assert await message_log.committed(group, tp) == 0  # the source topic is read again from the start


# Embedded only: Kafka enforces retention itself (its DLQ topics' retention.ms=-1: app/tests/test_kafka_init.py).
@pytest.mark.parametrize("message_log", ["embedded"], indirect=True)
async def test_dead_letter_topics_made_with_the_old_seven_day_default_keep_their_records(
    message_log: MessageLog,
) -> None:
    from datetime import timedelta

    from gatherly.kernel.log.base import OutgoingMessage, utcnow

    enforce = getattr(message_log, "enforce_retention", None)
    assert enforce is not None
    dlq = dead_letter_topic(f"legacy-{group_name()}")
    await message_log.ensure_topics([TopicConfig(dlq, retention_ms=7 * 24 * 3600 * 1000)])  # as before issue #7
    await message_log.publish([OutgoingMessage(dlq, "k", b"{}", {})])
    await message_log.ensure_topics([TopicConfig(dlq, retention_ms=None)])  # what a worker asks for today
    await enforce(now=utcnow() + timedelta(days=30))
    assert len(await message_log.read(dlq)) == 1


# Embedded only: on Kafka the same configs become retention.ms (app/tests/test_kafka_init.py).
@pytest.mark.parametrize("message_log", ["embedded"], indirect=True)
async def test_a_topic_of_personal_data_its_dead_letters_and_redeliveries_are_kept_only_as_long_as_it_says(
    ledger_db: Database, message_log: MessageLog
) -> None:
    from datetime import timedelta

    from gatherly.kernel.log.base import OutgoingMessage, utcnow

    deposit = deposit_event()
    short_lived = type(
        f"Private{deposit.__name__}",
        (deposit,),
        {"__module__": __name__, "TYPE": f"{deposit.TYPE}.private", "TOPIC_RETENTION": timedelta(hours=1)},
    )
    group = group_name()
    worker = worker_for(ledger_consumers(short_lived, group), message_log, ledger_db)
    await worker.ensure_topics()
    kept = [deposit.TOPIC, dead_letter_topic(deposit.TOPIC), redelivery_topic(group)]
    await message_log.publish([OutgoingMessage(topic, "k", b"{}", {}) for topic in kept])
    enforce = getattr(message_log, "enforce_retention", None)
    assert enforce is not None
    await enforce(now=utcnow() + timedelta(minutes=59))
    assert [len(await message_log.read(topic)) for topic in kept] == [1, 1, 1]
    await enforce(now=utcnow() + timedelta(minutes=61))
    assert [len(await message_log.read(topic)) for topic in kept] == [0, 0, 0]


async def test_a_resumed_partition_whose_record_is_gone_does_not_make_polling_spin(
    ledger_db: Database, message_log: MessageLog
) -> None:
    from gatherly.kernel.delivery import _Pause

    worker = worker_for(ledger_consumers(deposit_event(), group_name()), message_log, ledger_db)
    worker._paused[TopicPartition("t", 0)] = _Pause(resume_at=time.monotonic() - 5, failures=1)
    assert worker._poll_timeout() == 0.5
    worker._paused[TopicPartition("t", 1)] = _Pause(resume_at=time.monotonic() + 0.2, failures=1)
    assert 0.0 < worker._poll_timeout() <= 0.2


async def test_a_consumer_stuck_without_failing_turns_readiness_red_until_it_goes_round_again(
    ledger_db: Database, message_log: MessageLog
) -> None:
    # A log or database that hangs rather than fails raises nothing, so the supervisor sees no failure; the
    # poll loop's own progress is what readiness watches.
    from gatherly.kernel.delivery import stuck_workers

    deposit = deposit_event()
    release = asyncio.Event()

    async def hang(event: Deposit, uow: LedgerUnitOfWork) -> None:
        await release.wait()
        await apply_deposit(event, uow)

    registry = ConsumerRegistry()
    registry.on(deposit, group=group_name())(hang)
    await publish_deposits(message_log, deposit, [2])
    worker = worker_for(registry, message_log, ledger_db)
    assert stuck_workers([worker], 0.3) == []  # not running is the supervisor's business
    async with Running(worker):
        await eventually(lambda: _true(stuck_workers([worker], 0.3) == [worker.spec.group]))
        release.set()
        await eventually(lambda: _equal(totals(ledger_db), (2, 1)))
        await eventually(lambda: _true(stuck_workers([worker], 0.3) == []))
