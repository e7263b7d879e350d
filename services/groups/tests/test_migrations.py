"""The groups service's Alembic chain builds exactly the tables its code declares, on each database backend
(apart from the text-search index of migration 0002, which only raw SQL describes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatherly.groups import SERVICE
from gatherly.groups.tables import metadata
from gatherly.kernel.testing import DB_BACKENDS, schema_drift

# Migration 0002's SQLite FTS5 table (and its shadow tables) and PostgreSQL trigram index.
TEXT_SEARCH_INDEX = ("groups_search", "group_search_ids", "ix_groups_search_text_trgm")


def _not_the_text_index(difference: Any) -> bool:
    kind, thing = difference[0], difference[1]
    return not (kind in ("remove_table", "remove_index") and thing.name.startswith(TEXT_SEARCH_INDEX))


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_migrations_build_the_declared_schema(tmp_path: Path, database_backend: str) -> None:
    drift = await schema_drift(database_backend, tmp_path, SERVICE.migrations, metadata)
    assert [d for d in drift if _not_the_text_index(d)] == []
