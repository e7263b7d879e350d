"""The events service's Alembic chain builds exactly the tables its code declares, on each database backend (apart
from migration 0008's PostGIS location column and index on PostgreSQL, which only raw SQL describes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatherly.events import SERVICE
from gatherly.events.tables import metadata
from gatherly.kernel.testing import DB_BACKENDS, is_postgis_location, schema_drift


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_migrations_build_the_declared_schema(tmp_path: Path, database_backend: str) -> None:
    drift = await schema_drift(database_backend, tmp_path, SERVICE.migrations, metadata)
    assert [d for d in drift if not is_postgis_location(d)] == []
