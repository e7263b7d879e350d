"""A tiny service used to test delivery: deposits are events, the ledger's totals are the effect to count."""

from __future__ import annotations

import uuid
from typing import ClassVar

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.tables import kernel_tables
from gatherly.kernel.uow import UnitOfWork

metadata = MetaData()
kernel_tables(metadata)
accounts = Table(
    "accounts",
    metadata,
    Column("account", String, primary_key=True),
    Column("balance", Integer, nullable=False),
    Column("deposits", Integer, nullable=False),
)


class Deposit(IntegrationEvent):
    """Subclassed per test with a topic of its own, so tests never see each other's messages."""

    AGGREGATE_ID: ClassVar[str] = "account"

    account: str
    amount: int


def deposit_event(name: str | None = None, topic: str | None = None) -> type[Deposit]:
    """A deposit event of a type of its own, on a topic of its own unless `topic` (another type of that topic: what
    a group reading the topic for the first type skips)."""
    suffix = name or uuid.uuid4().hex[:10]
    return type(
        f"Deposit_{suffix}",
        (Deposit,),
        {"__module__": __name__, "TOPIC": topic or f"deposit-{suffix}", "TYPE": f"deposit.made.{suffix}"},
    )


class LedgerUnitOfWork(UnitOfWork):
    async def add(self, account: str, amount: int) -> None:
        insert = sqlite_insert if self.db.is_sqlite else postgresql_insert
        statement = insert(accounts).values(account=account, balance=amount, deposits=1)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["account"],
                set_={"balance": accounts.c.balance + amount, "deposits": accounts.c.deposits + 1},
            )
        )


async def apply_deposit(event: Deposit, uow: LedgerUnitOfWork) -> None:
    await uow.add(event.account, event.amount)


def ledger_consumers(event: type[Deposit], group: str) -> ConsumerRegistry:
    registry = ConsumerRegistry()
    registry.on(event, group=group)(apply_deposit)
    return registry


async def create_schema(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)


async def totals(db: Database) -> tuple[int, int]:
    """(sum of balances, number of deposits applied)."""
    async with db.read_session() as session:
        row = (
            await session.execute(
                select(func.coalesce(func.sum(accounts.c.balance), 0), func.coalesce(func.sum(accounts.c.deposits), 0))
            )
        ).one()
    return int(row[0]), int(row[1])
