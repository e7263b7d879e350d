"""kernel_0003: every service's outbox on PostgreSQL gets the NOTIFY trigger that wakes its relay, new or old."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from gatherly.app.services import ALL
from gatherly.kernel.db import Database, alembic_config
from gatherly.kernel.testing import DB_BACKENDS, scratch_database

if "postgresql" in DB_BACKENDS:  # SQLite has no NOTIFY: its relay shares its writers' process

    @pytest.mark.parametrize("service", sorted(ALL))
    async def test_kernel_0003_gives_every_outbox_its_notify_trigger(service: str, tmp_path: Path) -> None:
        async with scratch_database("postgresql", tmp_path) as url:
            db = Database(url)
            try:
                await db.migrate(ALL[service].migrations)  # a new database: the outbox is made with the trigger
                assert await _has_trigger(db)
                config = alembic_config(ALL[service].migrations, url)
                async with db.engine.begin() as connection:  # back to before kernel_0003: the trigger goes
                    await connection.run_sync(lambda sync: _alembic(command.downgrade, config, sync, "kernel_0002"))
                assert not await _has_trigger(db)
                await db.migrate(ALL[service].migrations)  # an outbox made before it gets it
                assert await _has_trigger(db)
            finally:
                await db.dispose()


def _alembic(run: Any, config: Any, connection: Any, revision: str) -> None:
    config.attributes["connection"] = connection
    run(config, revision)


async def _has_trigger(db: Database) -> bool:
    async with db.engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM pg_trigger WHERE tgname = 'outbox_notify' AND tgrelid = 'outbox'::regclass")
        )
    return bool(found)
