"""Two mail senders (replicas) claiming from one PostgreSQL outbox at once: each takes other messages straight
away (SKIP LOCKED) instead of waiting for the other's claim to commit, and none is taken twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gatherly.kernel.testing import DB_BACKENDS, migrated_database
from gatherly.users import SERVICE
from gatherly.users.store import Stores

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
UNTIL = NOW + timedelta(minutes=5)

if "postgresql" in DB_BACKENDS:  # concurrent writers: SQLite lets one in at a time, so none can skip another's

    async def test_two_senders_claim_different_mails_at_once(tmp_path: Path) -> None:
        async with migrated_database("postgresql", tmp_path, SERVICE.migrations) as db:
            async with db.writing() as connection:
                for n in range(10):
                    await Stores(connection).mail.add(f"p{n}@example.org", "Hi", "text", None, NOW)

            async def second_sender() -> list[str]:
                async with db.writing() as connection:
                    return [m.id for m in await Stores(connection).mail.claim_due(NOW, UNTIL, 4)]

            async with db.writing() as connection:  # the first sender's claim, not yet committed
                first = [m.id for m in await Stores(connection).mail.claim_due(NOW, UNTIL, 4)]
                # Without SKIP LOCKED the second would wait here for the first's transaction: a timeout.
                second = await asyncio.wait_for(second_sender(), 10)
            async with db.writing() as connection:
                rest = [m.id for m in await Stores(connection).mail.claim_due(NOW, UNTIL, 10)]
                later = await Stores(connection).mail.claim_due(NOW, UNTIL, 10)
        assert len(first) == len(second) == 4 and len(rest) == 2
        assert len(set(first) | set(second) | set(rest)) == 10  # each mail claimed once
        assert later == []  # claimed ones wait until their claim runs out
