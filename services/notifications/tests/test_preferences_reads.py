"""A person's preferences as the store reads them (a fixed-shape statement on the driver's connection) are what the
general SQLAlchemy statement gives, on each database, on a read connection and inside a write transaction: set ones
(kinds this build no longer knows left out), empty ones, and the defaults for a person with no row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from gatherly.kernel.db import Database
from gatherly.kernel.testing import DB_BACKENDS, migrated_database
from gatherly.notifications import SERVICE
from gatherly.notifications.domain import Kind, Preferences
from gatherly.notifications.store import PreferenceStore, reading
from gatherly.notifications.tables import preferences

pytestmark = pytest.mark.asyncio(loop_scope="function")

AT = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
ROWS: list[dict[str, Any]] = [
    {
        "user_id": "ann",
        "email": {"comment_posted": True, "event_scheduled": False, "a_kind_of_old": False},
        "push": {"event_reminder": False, "weekly_digest": True},
        "reminder_hours": [48, 24, 1],
    },
    {"user_id": "bob", "email": {}, "push": {}, "reminder_hours": []},
    {"user_id": "cat", "email": {"group_announcement": False}, "push": {}, "reminder_hours": [672]},
]


async def _general(db: Database, user_id: str) -> Preferences:
    """The preferences as the store read them before: built per call, run through SQLAlchemy."""
    async with db.read_connection() as connection:
        row = (await connection.execute(select(preferences).where(preferences.c.user_id == user_id))).mappings().first()
    if row is None:
        return Preferences()
    known = {kind.value for kind in Kind}
    return Preferences(
        {Kind(k): bool(v) for k, v in row["email"].items() if k in known},
        {Kind(k): bool(v) for k, v in row["push"].items() if k in known},
        tuple(row["reminder_hours"]),
    )


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_persons_preferences_read_on_the_driver_are_what_the_general_statement_reads(
    tmp_path: Path, database_backend: str
) -> None:
    async with migrated_database(database_backend, tmp_path, SERVICE.migrations) as db:
        async with db.writing() as session:
            await session.execute(insert(preferences), [{**row, "updated_at": AT} for row in ROWS])
        for user_id in ("ann", "bob", "cat", "nobody"):
            expected = await _general(db, user_id)
            async with reading(db) as stores:
                read = await stores.preferences.of(user_id)
            async with db.writing() as session:
                in_a_write = await PreferenceStore(session).of(user_id)
            assert read == expected == in_a_write, user_id
            assert all(type(kind) is Kind for kind in [*read.email, *read.push])
            assert read.email_table() == expected.email_table() and read.push_table() == expected.push_table()
        async with reading(db) as stores:
            assert await stores.preferences.of("nobody") == Preferences()
            assert (await stores.preferences.of("ann")).reminder_hours == (48, 24, 1)
