"""The groups service's Alembic chain builds exactly the tables its code declares, on each database backend
(apart from what only raw SQL describes: the text-search index of migration 0002 and, on PostgreSQL, migration 0004's
PostGIS location column, its index and the extension's own table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatherly.groups import SERVICE
from gatherly.groups.tables import metadata
from gatherly.kernel.testing import DB_BACKENDS, is_postgis_location, schema_drift

# Migration 0002's SQLite FTS5 table (and its shadow tables) and PostgreSQL trigram index.
TEXT_SEARCH_INDEX = ("groups_search", "group_search_ids", "ix_groups_search_text_trgm")


def _not_raw_sql(difference: Any) -> bool:
    kind, thing = difference[0], difference[1]
    text_index = kind in ("remove_table", "remove_index") and thing.name.startswith(TEXT_SEARCH_INDEX)
    return not (text_index or is_postgis_location(difference))


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_migrations_build_the_declared_schema(tmp_path: Path, database_backend: str) -> None:
    drift = await schema_drift(database_backend, tmp_path, SERVICE.migrations, metadata)
    assert [d for d in drift if _not_raw_sql(d)] == []
