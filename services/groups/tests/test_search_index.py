"""Text search through the index (SQLite FTS5 trigram table, PostgreSQL pg_trgm) finds exactly what the plain
substring match found, and the index follows inserts, edits and deletes of groups."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, delete, insert, select, text

from gatherly.groups import SERVICE, store
from gatherly.groups.domain import (
    Group,
    GroupSearch,
    GroupSort,
    UserId,
    details_from,
    new_group_id,
    search_text,
    slug_base,
)
from gatherly.groups.store import GroupStore, reading
from gatherly.groups.tables import groups
from gatherly.kernel.db import Database, alembic_config
from gatherly.kernel.testing import DB_BACKENDS, migrated_database, scratch_database

WORDS = [
    "Über",
    "uber",
    "straße",
    "STRASSE",
    "100%",
    "50_50",
    'say "hi"',
    "it's",
    "café",
    "Cafe",
    "naïve",
    "日本語",
    "hiking",
    "Hike",
    "hikers",
    "python",
    "PyThOn",
    "a\nb",
    "x",
    "ab",
    "🙂 emoji",
    # The LIKE's escape character (the pattern is escaped by hand since the statement is bound, not rebuilt).
    "and/or",
    "/%/_",
]
QUERIES = [
    "über",
    "uber",
    "strasse",
    "straße",
    "100%",
    "%",
    "_",
    "50_50",
    '"hi"',
    "'s",
    "café",
    "cafe",
    "日本",
    "hik",
    "hike",
    "python",
    "yth",
    "a\nb",
    "x",
    "ab",
    "🙂",
    "no such words",
    "e h",
    "iking hi",
    "/",
    "d/o",
    "/%",
    "%/_",
]


@pytest.fixture(params=DB_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(backend, tmp_path, SERVICE.migrations) as database:
        yield database


async def _add(db: Database, name: str, description: str, created_at: datetime) -> Group:
    details = details_from(name=name, description=description)
    draft = Group(new_group_id(), "", details, member_count=1, created_at=created_at, updated_at=created_at)
    async with db.writing() as session:
        return await GroupStore(session).add(draft, slug_base(name))


async def _add_as_0001_did(db: Database, name: str, description: str, created_at: datetime) -> str:
    """A group row with the columns of revision 0001 only (before name_key existed)."""
    columns = {k: v for k, v in store._detail_columns(details_from(name=name, description=description)).items()}
    del columns["name_key"]
    group_id = new_group_id()
    async with db.writing() as session:
        await session.execute(
            insert(groups).values(
                id=group_id,
                slug=slug_base(name),
                member_count=1,
                created_at=created_at,
                updated_at=created_at,
                **columns,
            )
        )
    return group_id


async def _found(db: Database, query: str) -> set[str]:
    async with reading(db) as stores:
        found, position = await stores.groups.search(GroupSearch(text=query), 100, None)
    assert position is None
    return {f["id"] for f in found}


def _expected(corpus: dict[str, str], query: str) -> set[str]:
    return {group_id for group_id, folded in corpus.items() if query.casefold() in folded}


@pytest.mark.parametrize("cap", [2000, 3], ids=["selective-through-the-index", "common-through-the-scan"])
async def test_indexed_search_finds_exactly_the_groups_containing_the_text(
    db: Database, cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "INDEXED_MATCHES_AT_MOST", cap)
    rng = random.Random(9)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    corpus: dict[str, str] = {}
    for n in range(60):
        name = " ".join(rng.sample(WORDS, 2))
        description = " ".join(rng.sample(WORDS, 3))
        group = await _add(db, f"{name} {n}", description, start + timedelta(minutes=n))
        corpus[group.id] = search_text(group.details)
    for query in QUERIES:
        assert await _found(db, query) == _expected(corpus, query), query


async def test_the_index_follows_edits_and_deletes(db: Database) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    walkers = await _add(db, "Weekend Walkers", "Long walks", now)
    readers = await _add(db, "Readers", "Books and tea", now + timedelta(seconds=1))
    assert await _found(db, "walk") == {walkers.id}

    renamed = replace(walkers.details, name="Weekend Cyclists", description="Long rides")
    async with db.writing() as session:
        await GroupStore(session).save(walkers.changed(renamed, now))
    assert await _found(db, "walk") == set()
    assert await _found(db, "cyclist") == {walkers.id}

    async with db.writing() as session:
        await session.execute(delete(groups).where(groups.c.id == readers.id))
    assert await _found(db, "books") == set()
    assert await _found(db, "weekend") == {walkers.id}


async def test_on_sqlite_a_text_search_reads_the_fts_index_not_every_group(tmp_path: Path) -> None:
    async with migrated_database("sqlite", tmp_path, SERVICE.migrations) as database, reading(database) as stores:
        condition, params, _ = await stores.groups._text_filter("walk")
        query = select(groups.c.id).where(condition).params(**params)
        compiled = query.compile(database.engine.sync_engine, compile_kwargs={"literal_binds": True})
        plan = (await stores.groups.session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
    steps = [str(row[-1]) for row in plan]
    assert any(step.startswith("SCAN groups_search VIRTUAL TABLE INDEX") for step in steps), steps
    assert not any(step.startswith("SCAN groups ") or step == "SCAN groups" for step in steps), steps


async def test_on_sqlite_pending_me_starts_from_the_callers_requests_not_every_group(tmp_path: Path) -> None:
    # ix_join_requests_user_id (migration 0007), as ix_memberships_user_id serves member=me: without it the page
    # walked every group newest first and its total scanned every request.
    async with migrated_database("sqlite", tmp_path, SERVICE.migrations) as database, reading(database) as stores:
        where = await stores.groups._where(GroupSearch(pending=UserId("someone")))
        query = store._page_query(GroupSort.NEWEST, where, after=False, total=True)
        compiled = query.compile(database.engine.sync_engine)
        values = {**compiled.params, **where.params, "limit": 21}
        positional = tuple(values[name] for name in compiled.positiontup or ())
        plan = (await stores.groups.session.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)).all()
    steps = [str(row[-1]) for row in plan]
    assert steps.count("SEARCH join_requests USING INDEX ix_join_requests_user_id (user_id=?)") == 2, steps
    assert not any(step.startswith(("SCAN groups", "SCAN join_requests")) for step in steps), steps


async def test_groups_made_before_the_index_existed_are_found_after_the_migration(tmp_path: Path, backend: str) -> None:
    async with scratch_database(backend, tmp_path) as url:
        database = Database(url)
        try:
            config = alembic_config(SERVICE.migrations, url)

            def upgrade_to(revision: str) -> Callable[[Connection], None]:
                def upgrade(connection: Connection) -> None:
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)

                return upgrade

            async with database.engine.begin() as connection:
                await connection.run_sync(upgrade_to("0001"))
            old = await _add_as_0001_did(
                database, "Quokka Watchers", "Since before the index", datetime(2025, 1, 1, tzinfo=UTC)
            )
            async with database.engine.begin() as connection:
                await connection.run_sync(upgrade_to("heads"))
            assert await _found(database, "quokka") == {old}
            new = await _add(database, "More quokkas", "", datetime(2026, 1, 1, tzinfo=UTC))
            assert await _found(database, "quokka") == {old, new.id}
            # Migration 0003 gave the old group its sort=name key.
            async with reading(database) as stores:
                by_name, _ = await stores.groups.search(GroupSearch(sort=GroupSort.NAME), 10, None)
            assert [f["id"] for f in by_name] == [new.id, old]  # "more quokkas" < "quokka watchers"
        finally:
            await database.dispose()
