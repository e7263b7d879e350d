"""Fixtures for delivery tests: a log of each configured backend, and a ledger database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ledger import create_schema

from gatherly.kernel.db import Database


@pytest.fixture
async def ledger_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    await create_schema(db)
    yield db
    await db.dispose()
