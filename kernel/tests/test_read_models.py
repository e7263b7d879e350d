"""The ready-image read model (kernel/read_models.py) on every database backend: upsert, lookup, removal, and a
table that matches what the services' migrations create."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData

from gatherly.contracts.images import ImageReady
from gatherly.contracts.users import ImageVariants
from gatherly.kernel.db import Database
from gatherly.kernel.read_models import ReadyImage, ReadyImageStore, ready_images_table

metadata = MetaData()
covers = ready_images_table(metadata, "cover_images", image_id_length=64)

SMALL = ImageVariants(thumb="/img/1/thumb.webp", medium="/img/1/medium.webp", large="/img/1/large.webp")
LARGER = ImageVariants(thumb="/img/1/t2.webp", medium="/img/1/m2.webp", large="/img/1/l2.webp")
NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def test_a_ready_image_is_found_by_id_and_none_for_unknown_or_no_id(db: Database) -> None:
    async with db.writing() as session:
        await ReadyImageStore(session, covers).put("img-1", "ann", SMALL, NOON)
    async with db.read_connection() as connection:
        store = ReadyImageStore(connection, covers)
        assert await store.get("img-1") == ReadyImage("img-1", "ann", SMALL)
        assert await store.get("img-2") is None
        assert await store.get(None) is None


async def test_image_ready_again_replaces_the_row_so_a_replay_rebuilds_the_same_table(db: Database) -> None:
    event = ImageReady(image_id="img-1", owner_id="ann", purpose="event_cover", variants=SMALL, ready_at=NOON)
    for _ in range(2):
        async with db.writing() as session:
            await ReadyImageStore(session, covers).keep(event)
    async with db.writing() as session:
        await ReadyImageStore(session, covers).put("img-1", "ann", LARGER, NOON)
    async with db.read_connection() as connection:
        assert await ReadyImageStore(connection, covers).get("img-1") == ReadyImage("img-1", "ann", LARGER)


async def test_a_removed_image_is_gone_and_removing_it_again_changes_nothing(db: Database) -> None:
    async with db.writing() as session:
        store = ReadyImageStore(session, covers)
        await store.put("img-1", "ann", SMALL, NOON)
        await store.put("img-2", "bob", SMALL, NOON)
    for _ in range(2):
        async with db.writing() as session:
            await ReadyImageStore(session, covers).remove("img-1")
    async with db.read_connection() as connection:
        store = ReadyImageStore(connection, covers)
        assert await store.get("img-1") is None
        assert await store.get("img-2") == ReadyImage("img-2", "bob", SMALL)


def test_the_table_has_the_columns_the_service_migrations_create() -> None:
    assert [(c.name, c.primary_key, c.nullable) for c in covers.columns] == [
        ("image_id", True, False),
        ("owner_id", False, False),
        ("variants", False, False),
        ("ready_at", False, False),
    ]
    assert covers.c.image_id.type.length == 64
