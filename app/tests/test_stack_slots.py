"""The stack's wait for a Debezium connector's replication slot on PostgreSQL: a transaction open in another
database holds the slot up (PostgreSQL waits for every writing transaction in the cluster); the stack names it and
keeps waiting as long as it is the reason, and gives up with a message when nothing holds the connector up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from gatherly.app import stack
from gatherly.app.stack import slot_blockers, while_slot_waits
from gatherly.kernel.kafka_connect import ConnectorFailed
from gatherly.kernel.testing import DB_BACKENDS, scratch_databases


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


if "postgresql" in DB_BACKENDS:  # logical replication slots are PostgreSQL's

    async def test_a_slot_held_up_by_a_transaction_elsewhere_is_waited_for_and_the_transaction_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(stack, "SLOT_REPORT_S", 0.0)  # every look at the blockers is reported
        async with scratch_databases("postgresql", tmp_path, ["service", "other"]) as template:
            service_url, other_url = template.replace("{service}", "service"), template.replace("{service}", "other")
            other, service = await _connect(other_url), await _connect(service_url)
            try:
                writing = other.transaction()
                await writing.start()
                await other.execute("CREATE TABLE seed (n int)")  # a writing transaction: it has a transaction id
                other_pid = other.get_server_pid()

                async def make_slot() -> str:
                    await service.execute("SELECT pg_create_logical_replication_slot('held_up', 'pgoutput')")
                    return "made"

                said: list[str] = []
                waiting = asyncio.create_task(while_slot_waits(make_slot(), service_url, "the slot", said.append, 1.0))
                ours = f"pid {other_pid} in "  # on a shared server the slot may first wait for others' too

                async def held_up_by_ours() -> bool:
                    return any(
                        b.startswith(ours) and "idle in transaction" in b for b in await slot_blockers(service_url)
                    )

                async with asyncio.timeout(300):
                    while not await held_up_by_ours():  # noqa: ASYNC110 - PostgreSQL offers no event
                        await asyncio.sleep(0.1)
                await asyncio.sleep(2.5)  # longer than idle_s: held up by someone else is no reason to give up
                assert not waiting.done() and await held_up_by_ours()
                await writing.commit()
                assert await asyncio.wait_for(waiting, 300) == "made"
                assert all(m.startswith("the slot waits for transactions open on PostgreSQL to end: ") for m in said)
                assert any(ours in m for m in said)
                await service.execute("SELECT pg_drop_replication_slot('held_up')")
            finally:
                await other.close()
                await service.close()

    async def test_a_connector_nothing_holds_up_fails_after_the_idle_time_with_a_message(tmp_path: Path) -> None:
        async with scratch_databases("postgresql", tmp_path, ["service"]) as template:
            never = asyncio.get_running_loop().create_future()
            with pytest.raises(ConnectorFailed, match="users's outbox connector not streaming after 1 s"):
                await while_slot_waits(
                    never, template.replace("{service}", "service"), "users's outbox connector", print, 1.0
                )
            assert never.cancelled()
