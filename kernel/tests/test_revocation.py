"""Revoked subjects: what deletions, locks and unlocks refuse; the verifier refusing them (also from its cache of
verified tokens); the table written by the kernel's consumer and read by every process of a service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from gatherly.contracts.users import UserDeleted, UserLocked, UserUnlocked
from gatherly.kernel.auth import StaticJwksSource, TokenVerifier
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.errors import Unauthorized
from gatherly.kernel.revocation import (
    REVOKED_SUBJECTS,
    Revocation,
    RevocationChange,
    RevocationFeed,
    RevocationStore,
    RevokedSubjects,
    register_revocations,
    wait_before_unlocking,
)
from gatherly.kernel.tables import KERNEL_METADATA
from gatherly.kernel.uow import UnitOfWork

from .test_auth import AUDIENCE, ISSUER, CountingDecode, KeySet  # type: ignore[import-not-found]

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def issued(seconds: float) -> dict[str, int]:
    return {"iat": int(at(seconds).timestamp())}


def state(*changes: tuple[str, float]) -> Revocation:
    revocation = Revocation.applying(RevocationChange("ann", changes[0][0], at(changes[0][1])))
    for kind, seconds in changes[1:]:
        revocation = revocation.after(RevocationChange("ann", kind, at(seconds)))
    return revocation


# --- what is refused ----------------------------------------------------------------------------------------------


def test_a_deleted_subject_is_refused_every_token() -> None:
    deleted = state(("deleted", 0))
    assert deleted.refuses(issued(-60)) and deleted.refuses(issued(3600)) and deleted.refuses({})


def test_a_locked_subject_is_refused_every_token_while_locked() -> None:
    locked = state(("locked", 0))
    assert locked.refuses(issued(-60)) and locked.refuses(issued(60))


def test_after_an_unlock_only_tokens_issued_before_it_stay_refused() -> None:
    unlocked = state(("locked", 0), ("unlocked", 30))
    assert unlocked.refuses(issued(-60))  # issued before the lock
    assert unlocked.refuses(issued(29))
    assert not unlocked.refuses(issued(30))  # `iat` counts whole seconds: the unlock's own second is let through
    assert not unlocked.refuses(issued(31))


@pytest.mark.parametrize(
    ("locked", "now", "wait"), [(0.2, 0.7, 0.3), (0.0, 0.0, 1.0), (0.2, 1.0, 0.0), (0.2, 1.5, 0.0), (0.2, 60.0, 0.0)]
)
def test_an_unlock_waits_for_a_later_second_than_the_lock(locked: float, now: float, wait: float) -> None:
    assert wait_before_unlocking(at(locked), at(now)) == pytest.approx(wait)


def test_a_token_issued_in_the_second_of_a_quick_lock_stays_refused_after_the_unlock_that_waited() -> None:
    token = issued(0.1)  # logged in, then locked and unlocked at once: the unlock waited into the next second
    unlocked_at = 0.3 + wait_before_unlocking(at(0.2), at(0.3))
    unlocked = state(("locked", 0.2), ("unlocked", unlocked_at))
    assert unlocked.refuses(token)
    assert not unlocked.refuses(issued(unlocked_at))  # the new login after the unlock


@pytest.mark.parametrize("iat", [None, "1764504000", True, [1]])
def test_after_an_unlock_a_token_without_a_usable_iat_is_refused(iat: object) -> None:
    unlocked = state(("locked", 0), ("unlocked", 30))
    assert unlocked.refuses({} if iat is None else {"iat": iat})


def test_a_lock_older_than_the_unlock_already_applied_changes_nothing() -> None:
    unlocked = state(("locked", 0), ("unlocked", 30))
    assert unlocked.after(RevocationChange("ann", "locked", at(0))) == unlocked
    assert not unlocked.refuses(issued(40))


def test_a_deletion_stays_whatever_comes_after_or_late() -> None:
    assert state(("deleted", 10), ("unlocked", 20)).refuses(issued(30))
    assert state(("locked", 10), ("unlocked", 20), ("deleted", 5)).refuses(issued(30))  # older, but still a deletion


def test_the_set_keeps_the_newer_state_of_a_subject_from_services_that_lag() -> None:
    subjects = RevokedSubjects()
    subjects.merge([("ann", state(("locked", 0), ("unlocked", 30)))])
    subjects.merge([("ann", state(("locked", 0)))])  # a service that has not seen the unlock yet
    assert not subjects.refuses("ann", issued(40))
    subjects.merge([("ann", state(("deleted", 5)))])  # older, but a deletion
    assert subjects.refuses("ann", issued(40))
    assert not subjects.refuses("bob", issued(40))


# --- the verifier -------------------------------------------------------------------------------------------------


@pytest.fixture
def keys() -> KeySet:
    return KeySet()


def verifier_of(keys: KeySet, subjects: RevokedSubjects) -> TokenVerifier:
    return TokenVerifier(StaticJwksSource(keys.jwks), issuer=ISSUER, audience=AUDIENCE, revoked=subjects)


def now_state(kind: str, seconds_ago: float = 0) -> Revocation:
    return Revocation.applying(RevocationChange("ann", kind, datetime.now(UTC) - timedelta(seconds=seconds_ago)))


async def test_the_verifier_refuses_a_revoked_subject_with_401_and_no_one_else(keys: KeySet) -> None:
    subjects = RevokedSubjects()
    subjects.merge([("ann", now_state("deleted"))])
    verifier = verifier_of(keys, subjects)
    with pytest.raises(Unauthorized, match="locked or deleted"):
        await verifier.verify(keys.token(sub="ann"))
    assert (await verifier.verify(keys.token(sub="bob"))).user_id == "bob"


async def test_a_cached_token_is_refused_once_its_subject_is_revoked(
    keys: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    subjects = RevokedSubjects()
    verifier = verifier_of(keys, subjects)
    token = keys.token(sub="ann")
    decode = CountingDecode(monkeypatch)
    assert (await verifier.verify(token)).user_id == "ann"
    subjects.merge([("ann", now_state("locked"))])
    with pytest.raises(Unauthorized):
        await verifier.verify(token)
    assert decode.calls == 1  # the second answer came from the cache, and was still refused


async def test_after_an_unlock_the_old_token_stays_refused_and_a_new_one_works(keys: KeySet) -> None:
    subjects = RevokedSubjects()
    verifier = verifier_of(keys, subjects)
    old = keys.token(sub="ann", iat=int(time.time()) - 120)
    await verifier.verify(old)
    subjects.merge([("ann", now_state("locked", seconds_ago=60))])
    subjects.merge([("ann", now_state("locked", seconds_ago=60).after(RevocationChange("ann", "unlocked", at_now())))])
    with pytest.raises(Unauthorized):
        await verifier.verify(old)
    assert (await verifier.verify(keys.token(sub="ann"))).user_id == "ann"


def at_now() -> datetime:
    return datetime.now(UTC)


# --- the table, the consumer, and several processes --------------------------------------------------------------


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(KERNEL_METADATA.create_all)
    try:
        yield database
    finally:
        await database.dispose()


def revocation_handler(event_type: str) -> Callable[..., object]:
    registry = ConsumerRegistry()
    register_revocations(registry, group="test.revocations")
    return registry.specs["test.revocations"].handlers[event_type]


async def consume(db: Database, event: UserDeleted | UserLocked | UserUnlocked, feed: RevocationFeed | None) -> None:
    """What the consumer worker does with one message: the kernel's handler in a unit of work of the service."""
    uow = UnitOfWork(db)
    uow.revocations_changed = feed.wake if feed is not None else None
    async with uow:
        await revocation_handler(event.TYPE)(event, uow)  # type: ignore[operator]


async def eventually(condition: Callable[[], bool], within: float) -> float:
    """Seconds until `condition` held; fails the test after `within` seconds."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within, f"not true within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_the_consumer_records_each_event_once_and_ignores_replays(db: Database) -> None:
    locked = UserLocked(user_id="ann", locked_at=at(0), reason="spam")
    for _ in range(2):
        await consume(db, locked, None)
    await consume(db, UserUnlocked(user_id="ann", unlocked_at=at(30)), None)
    await consume(db, locked, None)  # replayed after the unlock: older, ignored
    async with db.read_connection() as connection:
        rows = (await connection.execute(REVOKED_SUBJECTS.select())).mappings().all()
        stored = await RevocationStore(connection).get("ann")
    assert len(rows) == 1
    assert stored is not None and not stored.locked and stored.not_before == at(30)


async def test_the_process_whose_consumer_wrote_refuses_at_once_and_another_within_its_interval(
    db: Database, database_url: str
) -> None:
    other_db = Database(database_url)  # a second process of the same service: its own pool, its own set
    here, there = RevokedSubjects(), RevokedSubjects()
    feed_here = RevocationFeed(db, here, interval=60.0)  # only the wake can make it refresh in time
    feed_there = RevocationFeed(other_db, there, interval=0.3)
    tasks = [asyncio.create_task(feed.run()) for feed in (feed_here, feed_there)]
    try:
        await consume(db, UserDeleted(user_id="ann", deleted_at=datetime.now(UTC)), feed_here)
        # Windows far under the 60 s interval (only the wake explains "here") yet wide for a loaded CI machine.
        await eventually(lambda: here.refuses("ann", {}), within=20.0)
        await eventually(lambda: there.refuses("ann", {}), within=20.0)
        assert not there.refuses("bob", {})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other_db.dispose()


async def test_a_refresh_reads_only_the_rows_changed_since_the_last_one(db: Database) -> None:
    now = datetime.now(UTC)
    async with db.writing() as connection:
        store = RevocationStore(connection)
        await store.apply(RevocationChange("old", "deleted", now - timedelta(hours=1)), now - timedelta(minutes=20))
        await store.apply(RevocationChange("recent", "locked", now - timedelta(hours=1)), now - timedelta(minutes=10))
    subjects = RevokedSubjects()
    feed = RevocationFeed(db, subjects, interval=60.0)
    assert await feed.refresh() == 2
    async with db.writing() as connection:
        await RevocationStore(connection).apply(RevocationChange("new", "locked", now), now)
    # Since the newest row seen (10 minutes ago) less the overlap (5 minutes): "recent" and "new", not "old".
    assert await feed.refresh() == 2
    assert len(subjects) == 3 and subjects.refuses("new", {}) and subjects.refuses("old", {})


async def test_an_unlock_written_by_another_process_reaches_the_set(db: Database) -> None:
    subjects = RevokedSubjects()
    feed = RevocationFeed(db, subjects, interval=60.0)
    await consume(db, UserLocked(user_id="ann", locked_at=datetime.now(UTC) - timedelta(minutes=1), reason="x"), None)
    await feed.refresh()
    token_claims = {"iat": int(time.time()) + 5}
    assert subjects.refuses("ann", token_claims)
    await consume(db, UserUnlocked(user_id="ann", unlocked_at=datetime.now(UTC)), None)
    await feed.refresh()
    assert not subjects.refuses("ann", token_claims)
    assert subjects.refuses("ann", {"iat": int(time.time()) - 120})


async def test_after_commit_callbacks_run_after_a_commit_and_never_after_a_rollback(db: Database) -> None:
    calls: list[str] = []
    uow = UnitOfWork(db)
    with pytest.raises(RuntimeError):
        uow.after_commit(lambda: calls.append("outside"))  # no transaction to wait for
    with pytest.raises(ZeroDivisionError):
        async with uow:
            uow.after_commit(lambda: calls.append("rolled back"))
            raise ZeroDivisionError
    async with uow:
        uow.after_commit(lambda: calls.append("committed"))
        assert calls == []  # not before the commit
    assert calls == ["committed"]


# --- two writers of one subject at once (PostgreSQL runs them side by side; SQLite's writers queue) -------------


async def until_waiting_for_a_lock(db: Database, writer: asyncio.Task[Revocation]) -> None:
    """Until `writer` waits for a lock the test's open transaction holds. On SQLite nothing can start beside that
    transaction (writers queue on the engine's write lock before their BEGIN IMMEDIATE): the order is already set."""
    if db.is_sqlite:
        return
    start = time.monotonic()
    while True:
        assert not writer.done(), f"the second writer did not wait: {writer}"
        async with db.read_connection() as connection:
            waiting = (await connection.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar()
        if waiting:
            return
        assert time.monotonic() - start < 10, "the second writer never waited for the first"
        await asyncio.sleep(0.01)


async def apply_alone(db: Database, change: RevocationChange) -> Revocation:
    async with db.writing() as connection:
        return await RevocationStore(connection).apply(change, datetime.now(UTC))


async def test_two_writers_making_a_subject_s_row_at_once_both_succeed(db: Database) -> None:
    # The images service's deletion step and the kernel's consumer both record the same deletion.
    deleted = RevocationChange("ann", "deleted", at(0))
    async with db.writing() as connection:
        await RevocationStore(connection).apply(deleted, datetime.now(UTC))
        second = asyncio.create_task(apply_alone(db, deleted))
        await until_waiting_for_a_lock(db, second)
    assert await second == Revocation.applying(deleted)
    async with db.read_connection() as connection:
        assert len((await connection.execute(REVOKED_SUBJECTS.select())).all()) == 1


async def test_a_deletion_is_not_lost_to_an_unlock_written_at_the_same_moment(db: Database) -> None:
    await apply_alone(db, RevocationChange("ann", "locked", at(0)))
    async with db.writing() as connection:
        await RevocationStore(connection).apply(RevocationChange("ann", "deleted", at(10)), datetime.now(UTC))
        unlock = asyncio.create_task(apply_alone(db, RevocationChange("ann", "unlocked", at(20))))
        await until_waiting_for_a_lock(db, unlock)
    assert (await unlock).deleted  # it read the deletion before deciding, not the lock it saw before
    async with db.read_connection() as connection:
        stored = await RevocationStore(connection).get("ann")
    assert stored is not None and stored.deleted and stored.not_before == at(20)
