"""Revoked token subjects: accounts deleted or locked by an administrator, learnt from the log into a table of
each service's database and held in memory by every process, so the token verifier refuses them with a set lookup.

- `user.deleted`: every token of the subject is refused, for good.
- `user.locked`: every token is refused while the lock lasts.
- `user.unlocked`: new tokens work again; tokens issued before the second of the unlock stay refused (`iat`).

The table is the truth; each process reads the rows changed since its last look every few seconds
(`GATHERLY_REVOCATION_REFRESH_SECONDS`) and at once after its own consumer wrote one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import RowMapping, bindparam, select, update

from gatherly.contracts.users import UserDeleted, UserLocked, UserUnlocked
from gatherly.kernel.db import Database, Executor, insert_ignoring_conflicts
from gatherly.kernel.delivery import ConsumerRegistry
from gatherly.kernel.tables import KERNEL_METADATA
from gatherly.kernel.uow import OutboxSignal, UnitOfWork

# A refresh reads again the rows written this long before the newest one it saw: a row's `changed_at` is taken
# when its transaction writes it, and another transaction may commit an older value after a refresh has passed it
# (and processes' clocks may differ a little). Re-reading a few minutes of changes costs next to nothing.
REFRESH_OVERLAP = timedelta(minutes=5)


REVOKED_SUBJECTS = KERNEL_METADATA.tables["revoked_subjects"]
_CHANGED_SINCE = select(REVOKED_SUBJECTS).where(REVOKED_SUBJECTS.c.changed_at >= bindparam("since"))
_ROW = select(REVOKED_SUBJECTS).where(REVOKED_SUBJECTS.c.user_id == bindparam("user_id"))
# Two writers of one subject (the kernel's consumer and a service's own deletion step, or a lock and a deletion)
# each read the row, decide and write: the row lock makes the second read what the first wrote, so no state is lost.
_LOCKED_ROW = _ROW.with_for_update()


@dataclass(frozen=True)
class RevocationChange:
    """One event's effect: `kind` is deleted, locked or unlocked, `at` when it happened."""

    user_id: str
    kind: Literal["deleted", "locked", "unlocked"]
    at: datetime

    @classmethod
    def of(cls, event: UserDeleted | UserLocked | UserUnlocked) -> RevocationChange:
        if isinstance(event, UserDeleted):
            return cls(event.user_id, "deleted", event.deleted_at)
        if isinstance(event, UserLocked):
            return cls(event.user_id, "locked", event.locked_at)
        return cls(event.user_id, "unlocked", event.unlocked_at)


@dataclass(frozen=True)
class Revocation:
    """What is refused of one subject's tokens, as of the newest event applied (`as_of`)."""

    as_of: datetime
    deleted: bool = False
    locked: bool = False
    not_before: datetime | None = None  # tokens issued (`iat`) before this second are refused

    def refuses(self, claims: Mapping[str, Any], *, deleted_ok: bool = False) -> bool:
        """`deleted_ok`: judge a deleted subject's token on the lock and unlock alone (only the routes that tell a
        person about their own deletion take it)."""
        if (self.deleted and not deleted_ok) or self.locked:
            return True
        if self.not_before is None:
            return False
        issued = claims.get("iat")
        # A token that does not say when it was issued cannot show it came after the unlock.
        if isinstance(issued, bool) or not isinstance(issued, int | float):
            return True
        # `iat` counts whole seconds: a token issued in the unlock's own second is let through.
        return issued < int(self.not_before.timestamp())

    def after(self, change: RevocationChange) -> Revocation:
        """This revocation once `change` is applied. Locks and unlocks count in the order they happened, so an
        older one arriving late changes nothing; a deletion always counts (nothing brings the subject back)."""
        return later(self, Revocation.applying(change))

    @classmethod
    def applying(cls, change: RevocationChange) -> Revocation:
        """The state `change` leaves on its own (a lock or unlock from nothing, or a deletion)."""
        if change.kind == "unlocked":
            return cls(change.at, not_before=change.at)
        return cls(change.at, deleted=change.kind == "deleted", locked=change.kind == "locked")

    @classmethod
    def of_row(cls, row: RowMapping) -> Revocation:
        return cls(row["as_of"], row["deleted"], row["locked"], row["not_before"])


def wait_before_unlocking(locked_at: datetime, now: datetime) -> float:
    """Seconds an unlock must wait so that it falls in a later whole second than the lock. `iat` counts whole
    seconds and no token is issued while locked, so then every token from before the lock has an `iat` below the
    unlock's second (refused) and every token from after it does not (accepted). Without the wait, a token issued in
    the same second as a quick lock and unlock would have worked again."""
    next_second = int(locked_at.timestamp()) + 1
    return max(0.0, next_second - now.timestamp())


def later(known: Revocation, incoming: Revocation) -> Revocation:
    """The newer of two states of one subject, deleted if either is."""
    if incoming.as_of < known.as_of:
        incoming, known = known, incoming
    return replace(incoming, deleted=True) if known.deleted and not incoming.deleted else incoming


class RevokedSubjects:
    """The in-memory set the verifier asks on every request: subject → what is refused of its tokens."""

    def __init__(self) -> None:
        self._by_subject: dict[str, Revocation] = {}

    def refuses(self, subject: str, claims: Mapping[str, Any], *, deleted_ok: bool = False) -> bool:
        revocation = self._by_subject.get(subject)
        return revocation is not None and revocation.refuses(claims, deleted_ok=deleted_ok)

    def merge(self, rows: Iterable[tuple[str, Revocation]]) -> None:
        """Take rows read from a service's table. The services of one process share this set and one may lag
        behind another: the newer state of a subject wins, and a deletion stays."""
        for subject, revocation in rows:
            known = self._by_subject.get(subject)
            self._by_subject[subject] = revocation if known is None else later(known, revocation)

    def __len__(self) -> int:
        return len(self._by_subject)


class RevocationStore:
    """The table in one service's database."""

    def __init__(self, session: Executor) -> None:
        self.session = session

    async def get(self, user_id: str) -> Revocation | None:
        row = (await self.session.execute(_ROW, {"user_id": user_id})).mappings().first()
        return Revocation.of_row(row) if row is not None else None

    async def apply(self, change: RevocationChange, now: datetime) -> Revocation:
        """Record `change` (idempotent: a replayed or older event writes nothing); returns the subject's state.
        Safe beside another transaction applying a change to the same subject at the same moment."""
        before = await self._locked(change.user_id)
        if before is None:
            made = Revocation.applying(change)
            inserted = await self.session.execute(
                insert_ignoring_conflicts(self.session, REVOKED_SUBJECTS)
                .values(user_id=change.user_id, **_values(made, now))
                .returning(REVOKED_SUBJECTS.c.user_id)
            )
            if inserted.first() is not None:
                return made
            # Another transaction made the row first and has committed (the insert waited for it): change its row.
            before = await self._locked(change.user_id)
            assert before is not None, "a conflicting row that is not there"
        after = before.after(change)
        if after == before:
            return after  # nothing new: no write, nothing for the processes to refresh
        table = REVOKED_SUBJECTS
        await self.session.execute(update(table).where(table.c.user_id == change.user_id).values(**_values(after, now)))
        return after

    async def _locked(self, user_id: str) -> Revocation | None:
        row = (await self.session.execute(_LOCKED_ROW, {"user_id": user_id})).mappings().first()
        return Revocation.of_row(row) if row is not None else None

    async def changed_since(self, since: datetime | None) -> list[tuple[str, Revocation, datetime]]:
        """Rows written at or after `since` (every row when None), with when each was written."""
        if since is None:
            result = await self.session.execute(select(REVOKED_SUBJECTS))
        else:
            result = await self.session.execute(_CHANGED_SINCE, {"since": since})
        return [(row["user_id"], Revocation.of_row(row), row["changed_at"]) for row in result.mappings()]


def _values(revocation: Revocation, changed_at: datetime) -> dict[str, Any]:
    return {
        "deleted": revocation.deleted,
        "locked": revocation.locked,
        "not_before": revocation.not_before,
        "as_of": revocation.as_of,
        "changed_at": changed_at,
    }


class RevocationFeed:
    """Keeps a process's `RevokedSubjects` up to date from one service's table: every `interval` seconds it reads
    the rows changed since its last look, and at once when woken (its service's consumer committed a row)."""

    def __init__(self, db: Database, subjects: RevokedSubjects, *, interval: float) -> None:
        self.db = db
        self.subjects = subjects
        self.interval = interval
        self.signal = OutboxSignal()
        self._newest: datetime | None = None  # the newest `changed_at` read so far

    def wake(self) -> None:
        self.signal.notify()

    async def refresh(self) -> int:
        """Read what changed into the set; returns how many rows were read."""
        since = self._newest - REFRESH_OVERLAP if self._newest is not None else None
        async with self.db.read_connection() as connection:
            rows = await RevocationStore(connection).changed_since(since)
        self.subjects.merge((subject, revocation) for subject, revocation, _ in rows)
        if rows:
            newest = max(changed_at for _, _, changed_at in rows)
            self._newest = max(newest, self._newest) if self._newest is not None else newest
        return len(rows)

    async def run(self) -> None:
        while True:
            await self.signal.wait(self.interval)
            await self.refresh()


def register_revocations(consumers: ConsumerRegistry, *, group: str) -> None:
    """Give a service the kernel's consumer of deletions, locks and unlocks (`group`: "<service>.revocations")."""

    @consumers.on(UserDeleted, UserLocked, UserUnlocked, group=group)
    async def record_revocation(event: UserDeleted | UserLocked | UserUnlocked, uow: UnitOfWork) -> None:
        await RevocationStore(uow.session).apply(RevocationChange.of(event), uow.clock.now())
        # This process refreshes its set once the row is committed; also when the row was there already (the users
        # service writes a lock's row with the lock, maybe from another process: `gatherly users lock`).
        if uow.revocations_changed is not None:
            uow.after_commit(uow.revocations_changed)
