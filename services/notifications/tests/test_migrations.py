"""The notifications service's Alembic chain builds exactly the tables its code declares, on each database backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gatherly.kernel.db import Database
from gatherly.kernel.testing import DB_BACKENDS, scratch_database
from gatherly.notifications import SERVICE
from gatherly.notifications.tables import metadata


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if d[0] != "remove_table" or d[1].name != "alembic_version"]


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_migrations_build_the_declared_schema(tmp_path: Path, database_backend: str) -> None:
    async with scratch_database(database_backend, tmp_path) as url:
        db = Database(url)
        try:
            await db.migrate(SERVICE.migrations)
            async with db.engine.connect() as connection:
                differences = await connection.run_sync(_differences)
        finally:
            await db.dispose()
    assert differences == []
