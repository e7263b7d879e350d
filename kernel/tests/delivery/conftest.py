"""Fixtures for delivery tests: a log of each configured backend, and a ledger database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ledger import create_schema

from gatherly.kernel.db import Database


@pytest.fixture
async def ledger_db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    await create_schema(db)
    yield db
    await db.dispose()
