"""Fixtures for delivery tests: a log of each configured backend, and a ledger database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ledger import create_schema

from gatherly.kernel.db import Database
from gatherly.kernel.log.embedded import EmbeddedLog


@pytest.fixture
async def ledger_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await create_schema(db)
    yield db
    await db.dispose()


@pytest.fixture
async def message_log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    log = EmbeddedLog(tmp_path / "log.db")
    await log.start()
    yield log
    await log.close()
