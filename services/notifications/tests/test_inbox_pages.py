"""The inbox's page and unread count as the store reads them (fixed-shape statements on the driver's connection) are
what the general SQLAlchemy statement gives, for every shape (`?unread=`, a cursor), page size and position, on each
database; and so are the live stream's reads (what came after a position, the newest position) and a notification by
id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, func, insert, select

from gatherly.kernel.db import Database
from gatherly.kernel.testing import DB_BACKENDS, scratch_database
from gatherly.notifications import SERVICE
from gatherly.notifications.domain import Kind, UserId
from gatherly.notifications.store import Notification, reading
from gatherly.notifications.tables import notifications

pytestmark = pytest.mark.asyncio(loop_scope="function")

KINDS = list(Kind)
START = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


async def _general(db: Database, query: Select[Any]) -> list[Notification]:
    """The notifications a statement built per call gives, run through SQLAlchemy: as the store read them before its
    fixed statements."""
    async with db.read_connection() as connection:
        rows = await connection.execute(query)
        return [
            Notification(
                r["seq"],
                r["id"],
                UserId(r["user_id"]),
                Kind(r["kind"]),
                r["title"],
                r["body"],
                r["link"],
                r["created_at"],
                r["read_at"],
            )
            for r in rows.mappings()
        ]


async def _general_page(db: Database, user_id: str, unread_only: bool, limit: int, before: int | None) -> list[object]:
    query = select(notifications).where(notifications.c.user_id == user_id)
    if unread_only:
        query = query.where(notifications.c.read_at.is_(None))
    if before is not None:
        query = query.where(notifications.c.seq < before)
    return list(await _general(db, query.order_by(notifications.c.seq.desc()).limit(limit)))


async def _general_after(db: Database, user_id: str, seq: int, limit: int) -> list[Notification]:
    query = select(notifications).where(notifications.c.user_id == user_id, notifications.c.seq > seq)
    return await _general(db, query.order_by(notifications.c.seq).limit(limit))


async def _general_newest(db: Database, user_id: str) -> int:
    async with db.read_connection() as connection:
        newest = await connection.scalar(
            select(func.max(notifications.c.seq)).where(notifications.c.user_id == user_id)
        )
        return int(newest or 0)


def _in_utc(found: list[Notification]) -> bool:
    """`==` takes a kind's text for the Kind and any zone's time for the instant: what the JSON writes from them (the
    kind's value, times ending in Z) needs the kind and UTC."""
    return all(
        type(note.kind) is Kind
        and note.created_at.utcoffset() == timedelta(0)
        and (note.read_at is None or note.read_at.utcoffset() == timedelta(0))
        for note in found
    )


async def _seeded(db: Database) -> list[int]:
    """Two people's inboxes interleaved (ann, bob); every third read; times with and without microseconds; their
    seqs."""
    await db.migrate(SERVICE.migrations)
    rows = []
    for n in range(13):
        created = START + timedelta(minutes=n, microseconds=(n % 2) * 123_456)
        rows.append(
            {
                "id": f"n{n}",
                "user_id": "ann" if n % 4 else "bob",
                "kind": KINDS[n % len(KINDS)].value,
                "title": f"Café «{n}» 🥐",
                "body": 'A "quoted" body\nwith a line',
                "link": f"/events/e{n}",
                "source": f"message-{n}",
                "created_at": created,
                "read_at": created + timedelta(hours=1) if n % 3 == 0 else None,
            }
        )
    async with db.writing() as session:
        await session.execute(insert(notifications), rows)
    async with db.read_connection() as connection:
        return list((await connection.scalars(select(notifications.c.seq))).all())


async def _general_unread(db: Database, user_id: str) -> int:
    async with db.read_connection() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(notifications)
            .where(notifications.c.user_id == user_id, notifications.c.read_at.is_(None))
        )
        return int(count or 0)


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_every_shape_of_the_inbox_reads_what_the_general_statement_reads(
    tmp_path: Path, database_backend: str
) -> None:
    async with scratch_database(database_backend, tmp_path) as url:
        db = Database(url)
        try:
            seqs = await _seeded(db)
            positions = [None, *seqs, max(seqs) + 1, 1]
            compared = 0
            for user_id in ("ann", "bob", "nobody"):
                async with reading(db) as stores:
                    unread = await stores.inbox.unread_count(user_id)
                assert unread == await _general_unread(db, user_id)
                for unread_only in (False, True):
                    for limit in (1, 2, 5, 14, 101):
                        for before in positions:
                            async with reading(db) as stores:
                                page = await stores.inbox.page(
                                    user_id, unread_only=unread_only, limit=limit, before=before
                                )
                            assert page == await _general_page(db, user_id, unread_only, limit, before)
                            assert _in_utc(page)
                            compared += bool(page)
            assert compared > 100  # most of them are pages with notifications in them
        finally:
            await db.dispose()


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_streams_reads_and_a_notification_by_id_are_what_the_general_statements_read(
    tmp_path: Path, database_backend: str
) -> None:
    async with scratch_database(database_backend, tmp_path) as url:
        db = Database(url)
        try:
            seqs = await _seeded(db)
            compared = 0
            for user_id in ("ann", "bob", "nobody"):
                async with reading(db) as stores:
                    newest = await stores.inbox.newest_seq(user_id)
                assert newest == await _general_newest(db, user_id)
                for seq in (0, *seqs, max(seqs) + 1):
                    for limit in (1, 2, 5, 100):
                        async with reading(db) as stores:
                            after = await stores.inbox.after(user_id, seq, limit)
                        assert after == await _general_after(db, user_id, seq, limit)
                        assert _in_utc(after)
                        compared += bool(after)
            assert compared > 50
            for notification_id in [f"n{n}" for n in range(13)] + ["no-such-id", ""]:
                async with reading(db) as stores:
                    found = await stores.inbox.get(notification_id)
                general = await _general(db, select(notifications).where(notifications.c.id == notification_id))
                assert [found] == general if general else found is None
                assert _in_utc(general)
        finally:
            await db.dispose()
