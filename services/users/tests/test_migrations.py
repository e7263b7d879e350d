"""The users service's Alembic chain builds exactly the tables its code declares, on each database backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatherly.kernel.testing import DB_BACKENDS, schema_drift
from gatherly.users import SERVICE
from gatherly.users.tables import metadata


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_migrations_build_the_declared_schema(tmp_path: Path, database_backend: str) -> None:
    assert await schema_drift(database_backend, tmp_path, SERVICE.migrations, metadata) == []
