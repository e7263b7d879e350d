"""The embedded message log: Kafka's semantics (partitions, offsets, consumer groups) in one SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
from pydantic_core import from_json

from gatherly.kernel.inline_sqlite import WAL_PRAGMAS, WalCheckpointer, is_busy
from gatherly.kernel.log.base import (
    CommitFailed,
    GroupNotEmpty,
    OutgoingMessage,
    RebalanceCallback,
    Record,
    TopicConfig,
    TopicPartition,
    UnknownTopic,
    check_headers,
    partition_for,
)

T = TypeVar("T")

log = structlog.get_logger(__name__)

# What every topic got before topics were created explicitly (dead-letter topics included).
LEGACY_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Several processes share the file; a writer waits this long for another's transaction before failing.
BUSY_TIMEOUT_S = 30.0
# Readers in WAL mode wait only while another process recovers the WAL index after a crash: rare and short.
READ_BUSY_TIMEOUT_S = 2.0
# A consumer that said which record types it handles (`EmbeddedConsumer.handles`) is woken this long after an
# append of none of them, not at once: it would only read the records and skip them, and a process runs many such
# groups (twelve read the `user` topic for types a profile edit is not). Waking at most once per delay, it skips a
# whole run of appends in one poll. Below a worker's offset commit interval (0.05 s), so its committed offsets, lag
# and `settle()` trail the log by about what they did.
SKIP_WAKE_DELAY_S = 0.02
# The records kept per partition of what was last read (EmbeddedLog._recent): every consumer group of the process reads
# the same records of its topics a few milliseconds apart (after a profile edit fifteen groups read the `user` topic's
# new records, twelve only to skip them). A group that keeps up reads within a few dozen records of the head.
RECENT_RECORDS = 256
# ... and at most these bytes of values per partition, so that a topic of large records keeps fewer of them (a
# process reads dozens of partitions: the memory stays bounded whatever the records hold).
RECENT_BYTES = 256 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL,
    retention_ms INTEGER
);
-- One row per partition so an append reads and bumps its head instead of scanning records.
CREATE TABLE IF NOT EXISTS partitions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    start_offset INTEGER NOT NULL DEFAULT 0,
    next_offset INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
);
-- Retention deletes by age in small batches: without this index each batch would scan the whole topic.
CREATE INDEX IF NOT EXISTS ix_records_topic_timestamp ON records (topic, timestamp_ms);
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    topics TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
-- Who reads each partition for a group, and the generation at which it took it: a member takes a partition
-- only from no one or from a dead member, and a commit is accepted only from the owner at its generation.
CREATE TABLE IF NOT EXISTS partition_owners (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    member_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
"""


def assign_partitions(
    members: Mapping[str, frozenset[str]], partitions: Iterable[TopicPartition]
) -> dict[str, set[TopicPartition]]:
    """Deal the sorted partitions round-robin over the sorted members, skipping members not subscribed to a
    partition's topic. Every member computes the same answer from the same live-member list."""
    ring = sorted(members)
    assignment: dict[str, set[TopicPartition]] = {member: set() for member in ring}
    turn = 0
    for tp in sorted(partitions):
        for _ in range(len(ring)):
            member = ring[turn % len(ring)]
            turn += 1
            if tp.topic in members[member]:
                assignment[member].add(tp)
                break
    return assignment


def _headers(stored: str) -> Any:
    """A record's stored headers, as `json.loads` reads them: pydantic-core's parser takes a third of the time (every
    group reads every record of its topics, most only to skip it); what it refuses goes to `json.loads`, so both the
    result and the error are as before."""
    try:
        return from_json(stored)
    except ValueError:
        return json.loads(stored)


def _stored_headers(message: OutgoingMessage) -> str:
    """A message's headers as the JSON text kept in the file: orjson's (a tenth of `json.dumps`'s ~3-4 µs for an
    event's ten headers), which `_headers` reads back as the same mapping. Headers Kafka would refuse are refused
    here too (`check_headers`): orjson refuses a lone surrogate or a name that is not text, and writes a value that
    is not text (a number, None; NaN as null), so those are checked. A value of a subclass of str is checked and
    written by orjson as the text it holds; a Mapping that is not a dict, which orjson refuses, is checked and
    written by `json.dumps` as before."""
    headers = message.headers
    try:
        stored = orjson.dumps(headers).decode()
    except TypeError:  # orjson.JSONEncodeError; also a Mapping that is not a dict
        check_headers(message)
        return json.dumps(dict(headers))
    for value in headers.values():
        if value.__class__ is not str:
            check_headers(message)
            break
    return stored


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Kept(list[Record]):
    """The records kept of a partition (`EmbeddedLog._recent`), with the `_others_version` at which they were last
    known all in the file: another process's retention may delete some of them (out of order, leaving the
    partition's start where it was). One object, so that the version goes when the records do."""

    __slots__ = ("version",)

    def __init__(self, records: Iterable[Record], version: int) -> None:
        super().__init__(records)
        self.version = version


class EmbeddedLog:
    """A `MessageLog` stored in one SQLite file (WAL), usable by several processes at once.

    Appends take the write lock (`BEGIN IMMEDIATE`), so offsets are gap-free per partition even with many
    publishing processes. Durability is `synchronous=NORMAL`: a committed append survives the process being
    killed (not necessarily a power loss). Consumers in this process are woken at once by `publish`; records
    written by other processes are noticed within `poll_interval`.

    Statements run on the event loop's thread, as for the service databases (see kernel/inline_sqlite.py): they
    take microseconds, a hop to a worker thread costs far more. A transaction never awaits, so transactions
    of this process cannot interleave; waiting for another process's write lock is done asynchronously."""

    def __init__(self, path: Path, *, session_timeout: float = 10.0, poll_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.session_timeout = session_timeout
        self.poll_interval = poll_interval
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # Partition counts never change once a topic exists, so they are cached for good.
        self._partition_counts: dict[str, int] = {}
        # The last records read of each partition, offsets consecutive, as read: a record never changes once appended
        # (offsets are never reused), so the next group reading them takes them from here instead of the file. Each
        # run carries the version at which it was last known all in the file (`_Kept`), and goes with it.
        self._recent: dict[TopicPartition, _Kept] = {}
        # Each topic's partition bounds as last read, while the file has not changed since: emptied by every write of
        # ours, and when another connection's writes change `_others_version` (the version they were read at). A
        # process's consumer groups look at the same topics after each append, most of them before any writes again.
        self._known_bounds: dict[str, dict[TopicPartition, tuple[int, int]]] = {}
        self._known_bounds_version: int | None = None
        self._unknown_versions = 0  # see `_others_version`: counts down from -1
        self._consumers: set[EmbeddedConsumer] = set()
        # Bumped by this process's writes that change a group's membership, its owners or the topics: with the file's
        # `_others_version` (other connections' writes) it tells a consumer when its assignment may have changed.
        self.membership_changes = 0
        self._checkpointer = WalCheckpointer(self.path)
        # Retention deletes this many records per transaction, then lets the loop run (see enforce_retention).
        self.retention_batch = 500

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Started again (after close), the file may be another one: nothing read from the last one holds.
        self._recent.clear()
        self._known_bounds.clear()
        self._known_bounds_version = None
        # The writer waits for other processes' write locks in `_write`, asynchronously, not in SQLite's handler.
        self._writer = self._connect(busy_timeout=0)

        def create_schema(db: sqlite3.Connection) -> None:
            # Statement by statement: executescript would commit the surrounding transaction first.
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

        await self._write(create_schema)
        self._reader = self._connect(busy_timeout=READ_BUSY_TIMEOUT_S)
        self._checkpointer = WalCheckpointer(self.path)
        self._checkpointer.ensure_started()

    def _connect(self, *, busy_timeout: float) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE), never implicitly.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            # Switching a new file to WAL needs a moment of exclusive access: wait for it here, once, at start.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            for pragma in WAL_PRAGMAS:  # checkpoints run in WalCheckpointer's thread, not inside our COMMITs
                db.execute(pragma)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        for db in (self._reader, self._writer):
            if db is not None:
                db.close()
        self._reader = self._writer = None
        await asyncio.to_thread(self._checkpointer.stop)

    async def __aenter__(self) -> EmbeddedLog:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def _read_db(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("EmbeddedLog is not started (call start() first)")
        return self._reader

    def _select(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Rows read on the writer connection, or on the reader when the writer cannot read at once. In WAL mode a
        connection drops its page cache when another connection changed the file since its last read: every append,
        offset commit and heartbeat of this process is on the writer, so the reader re-read its pages after each
        (a consumer's bounds and records queries took a third as long again). The writer's busy timeout is 0 (it
        waits for other processes' write locks in `_write`), so a read it cannot do now (a TRUNCATE checkpoint,
        another process recovering the WAL index) goes to the reader, which waits as before."""
        if self._writer is None:
            raise RuntimeError("EmbeddedLog is not started (call start() first)")
        try:
            return self._writer.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
        return self._read_db.execute(sql, parameters).fetchall()

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction, retrying while another process holds the write lock."""
        if self._writer is None:
            raise RuntimeError("EmbeddedLog is not started (call start() first)")
        db = self._writer
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._transaction(db, work)
            except sqlite3.OperationalError as error:
                if not is_busy(error) or time.monotonic() > deadline:
                    raise
            # Another process holds the write lock. SQLite's own busy handler would sleep on this thread, and
            # up to 100 ms between tries, long enough for a busy writer to take the lock again and again
            # (starving us); short random retries share it fairly. `work` reads what it needs inside the
            # transaction, so running it again is safe.
            await asyncio.sleep(random.uniform(0.0002, 0.002))

    def _transaction(self, db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later upgrades to a
        # write fails at once with SQLITE_BUSY in WAL mode instead of waiting for the busy timeout.
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            self._known_bounds.clear()
        return result

    def _notify(self, topics: set[str] | None = None) -> None:
        """Wake this process's consumers of `topics` (all of them when None: a member left or released partitions).
        Only the consumers of what was appended: every woken consumer looks at the log, and a process runs a
        consumer group per subscribing service, most of them for other topics."""
        for consumer in self._consumers:
            if topics is None or not topics.isdisjoint(consumer.topics):
                consumer._wakeup.set()

    def _notify_appended(self, messages: Sequence[OutgoingMessage]) -> None:
        """Wake this process's consumers of the appended messages' topics: at once those that may handle one of
        them (no `handles` said, a type they handle, or a message without a type, which they must parse), the
        others after `SKIP_WAKE_DELAY_S` (they would skip every one)."""
        types: dict[str, set[str | None]] = {}
        for message in messages:
            types.setdefault(message.topic, set()).add(message.headers.get("type"))
        for consumer in self._consumers:
            appended = [types[topic] for topic in consumer.topics if topic in types]
            if not appended:
                continue
            handles = consumer.handles
            if handles is None or any(None in kinds or not handles.isdisjoint(kinds) for kinds in appended):
                consumer._wakeup.set()
            else:
                consumer._wake_later(SKIP_WAKE_DELAY_S)

    # -- topics --------------------------------------------------------------------------------------

    async def ensure_topics(self, topics: Sequence[TopicConfig]) -> None:
        def create(db: sqlite3.Connection) -> None:
            for config in topics:
                self._create_topic(db, config)

        await self._write(create)
        self.membership_changes += 1
        # A consumer waiting for a topic that did not exist yet has partitions to take now.
        self._notify({config.name for config in topics})

    def _others_version(self) -> int:
        """A number that changes whenever another connection (another process, or another `EmbeddedLog` on this
        file) commits to the log: SQLite's `data_version` on our writer, which our own commits leave alone. A few
        microseconds, where looking at the log (membership, owners, bounds) costs a consumer about half a
        millisecond."""
        if self._writer is None:
            raise RuntimeError("EmbeddedLog is not started (call start() first)")
        try:
            return int(self._writer.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
        # The writer cannot read now (as in `_select`): a number never given before, so whatever is compared with it
        # counts as changed and is read again.
        self._unknown_versions -= 1
        return self._unknown_versions

    @staticmethod
    def _create_topic(db: sqlite3.Connection, config: TopicConfig) -> None:
        if config.partitions < 1:
            raise ValueError(f"topic {config.name!r} needs at least one partition")
        created = db.execute(
            "INSERT OR IGNORE INTO topics (name, partitions, retention_ms) VALUES (?, ?, ?)",
            (config.name, config.partitions, config.retention_ms),
        )
        if created.rowcount == 0:
            # It exists: an existing topic keeps its partitions and retention, with two exceptions. A shorter
            # retention asked for is taken: it is asked for erasure (personal data must not stay longer than it).
            if config.retention_ms is not None:
                db.execute(
                    "UPDATE topics SET retention_ms = ? WHERE name = ? AND (retention_ms IS NULL OR retention_ms > ?)",
                    (config.retention_ms, config.name, config.retention_ms),
                )
            # And dead-letter topics made before they were created explicitly got the 7-day default, which would
            # purge parked messages.
            if config.name.endswith(".dlq") and config.retention_ms is None:
                db.execute(
                    "UPDATE topics SET retention_ms = NULL WHERE name = ? AND retention_ms = ?",
                    (config.name, LEGACY_DEFAULT_RETENTION_MS),
                )
            return
        db.executemany(
            "INSERT OR IGNORE INTO partitions (topic, partition) VALUES (?, ?)",
            [(config.name, p) for p in range(config.partitions)],
        )

    def _partitions_of(self, db: sqlite3.Connection, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of the topics that exist (unknown ones are left out)."""
        wanted = set(topics)
        missing = [t for t in wanted if t not in self._partition_counts]
        if missing:
            rows = db.execute(
                f"SELECT name, partitions FROM topics WHERE name IN ({_placeholders(len(missing))})", missing
            )
            for name, partitions in rows:
                self._partition_counts[name] = partitions
        return {t: self._partition_counts[t] for t in wanted if t in self._partition_counts}

    # -- publishing ----------------------------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        timestamp = _now_ms()

        def append(db: sqlite3.Connection) -> None:
            # Heads are read inside the write transaction (never from a cache): they are the truth every
            # publishing process agrees on, and the partition count is simply how many there are.
            heads: dict[tuple[str, int], int] = {}
            counts: dict[str, int] = {}
            for topic in {m.topic for m in messages}:
                existing: list[tuple[int, int]] = [
                    (partition, next_offset)
                    for partition, next_offset in db.execute(
                        "SELECT partition, next_offset FROM partitions WHERE topic = ?", (topic,)
                    )
                ]
                if not existing:
                    raise UnknownTopic(f"topic {topic!r} does not exist: create it with ensure_topics first")
                counts[topic] = len(existing)
                heads.update(((topic, partition), next_offset) for partition, next_offset in existing)
            appended: dict[tuple[str, int], int] = {}
            rows = []
            for m in messages:
                head = (m.topic, partition_for(m.key, counts[m.topic]))
                offset = appended.get(head, heads[head])
                appended[head] = offset + 1
                rows.append((m.topic, head[1], offset, m.key, m.value, _stored_headers(m), timestamp))
            db.executemany(
                "INSERT INTO records (topic, partition, offset, key, value, headers, timestamp_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "UPDATE partitions SET next_offset = ? WHERE topic = ? AND partition = ?",
                [(offset, topic, partition) for (topic, partition), offset in appended.items()],
            )

        await self._write(append)
        self._notify_appended(messages)

    # -- groups and offsets --------------------------------------------------------------------------

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> EmbeddedConsumer:
        consumer = EmbeddedConsumer(self, group, topics, on_assigned=on_assigned, on_revoked=on_revoked)
        self._consumers.add(consumer)
        return consumer

    async def committed(self, group: str, partition: TopicPartition) -> int | None:
        rows = list(
            self._select(
                "SELECT next_offset FROM group_offsets WHERE group_id = ? AND topic = ? AND partition = ?",
                (group, partition.topic, partition.partition),
            )
        )
        return int(rows[0][0]) if rows else None

    async def group_members(self, group: str) -> set[str]:
        return set(self._live_members(self._read_db, group, time.time()))

    async def _commit(
        self,
        group: str,
        member_id: str,
        offsets: Mapping[TopicPartition, int],
        generations: Mapping[TopicPartition, int],
    ) -> None:
        if not offsets:
            return

        def upsert(db: sqlite3.Connection) -> None:
            for tp in offsets:
                owner = db.execute(
                    "SELECT member_id, generation FROM partition_owners"
                    " WHERE group_id = ? AND topic = ? AND partition = ?",
                    (group, tp.topic, tp.partition),
                ).fetchone()
                if owner is None or (owner[0], owner[1]) != (member_id, generations.get(tp)):
                    raise CommitFailed(
                        f"member {member_id} of group {group!r} does not own {tp} at generation"
                        f" {generations.get(tp)} (owner now: {owner})"
                    )
            # A commit proves the member alive, whatever delayed its last heartbeat.
            db.execute(
                "UPDATE group_members SET heartbeat_at = ? WHERE group_id = ? AND member_id = ?",
                (time.time(), group, member_id),
            )
            db.executemany(
                "INSERT INTO group_offsets (group_id, topic, partition, next_offset) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                [(group, tp.topic, tp.partition, offset) for tp, offset in offsets.items()],
            )

        await self._write(upsert)

    async def reset_group(self, group: str, topics: Sequence[str], to: str | int = "earliest") -> None:
        if not isinstance(to, int) and to not in ("earliest", "latest"):
            raise ValueError(f"reset target must be 'earliest', 'latest' or an offset, not {to!r}")

        def reset(db: sqlite3.Connection) -> None:
            members = self._live_members(db, group, time.time())
            if members:
                raise GroupNotEmpty(
                    f"group {group!r} has live members {sorted(members)}: stop its consumers first"
                    f" (a killed member counts as live for {self.session_timeout}s)"
                )
            rows = []
            for topic in topics:
                for partition, start, end in db.execute(
                    "SELECT partition, start_offset, next_offset FROM partitions WHERE topic = ?", (topic,)
                ):
                    if to == "earliest":
                        offset = start
                    elif to == "latest":
                        offset = end
                    else:
                        offset = min(max(int(to), start), end)
                    rows.append((group, topic, partition, offset))
            db.executemany(
                "INSERT INTO group_offsets (group_id, topic, partition, next_offset) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                rows,
            )

        await self._write(reset)

    async def _heartbeat(self, group: str, member_id: str, topics: Sequence[str]) -> None:
        now = time.time()

        def beat(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO group_members (group_id, member_id, topics, heartbeat_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (group_id, member_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (group, member_id, json.dumps(list(topics)), now),
            )
            # Members of killed processes never say goodbye; forget them once long dead.
            db.execute(
                "DELETE FROM group_members WHERE group_id = ? AND heartbeat_at < ?",
                (group, now - 10 * self.session_timeout),
            )

        await self._write(beat)

    def _owners(self, db: sqlite3.Connection, group: str) -> dict[TopicPartition, tuple[str, int]]:
        rows = db.execute(
            "SELECT topic, partition, member_id, generation FROM partition_owners WHERE group_id = ?", (group,)
        )
        return {TopicPartition(topic, partition): (member, generation) for topic, partition, member, generation in rows}

    async def _claim(self, group: str, member_id: str, wanted: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Take the wanted partitions that nobody live owns; returns each taken one with its new generation."""

        def claim(db: sqlite3.Connection) -> dict[TopicPartition, int]:
            live = self._live_members(db, group, time.time())
            owners = self._owners(db, group)
            taken: dict[TopicPartition, int] = {}
            for tp in sorted(wanted):
                owner, generation = owners.get(tp, ("", 0))
                if owner and owner != member_id and owner in live:
                    continue  # its owner is alive: it releases it at its next poll, after committing
                taken[tp] = generation + 1
            db.executemany(
                "INSERT INTO partition_owners (group_id, topic, partition, member_id, generation)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (group_id, topic, partition) DO UPDATE"
                " SET member_id = excluded.member_id, generation = excluded.generation",
                [(group, tp.topic, tp.partition, member_id, generation) for tp, generation in taken.items()],
            )
            return taken

        taken = await self._write(claim)
        self.membership_changes += 1
        return taken

    async def _release(self, group: str, member_id: str, partitions: set[TopicPartition]) -> None:
        def release(db: sqlite3.Connection) -> None:
            db.executemany(
                "DELETE FROM partition_owners WHERE group_id = ? AND topic = ? AND partition = ? AND member_id = ?",
                [(group, tp.topic, tp.partition, member_id) for tp in partitions],
            )

        await self._write(release)
        self.membership_changes += 1
        self._notify()

    async def _leave(self, group: str, member_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM group_members WHERE group_id = ? AND member_id = ?", (group, member_id))
            db.execute("DELETE FROM partition_owners WHERE group_id = ? AND member_id = ?", (group, member_id))

        await self._write(delete)
        self.membership_changes += 1
        # Members in this process take over the partitions at once rather than at their next poll tick.
        self._notify()

    def _live_members(self, db: sqlite3.Connection, group: str, now: float) -> dict[str, frozenset[str]]:
        rows = db.execute(
            "SELECT member_id, topics FROM group_members WHERE group_id = ? AND heartbeat_at >= ?",
            (group, now - self.session_timeout),
        )
        return {member_id: frozenset(json.loads(topics)) for member_id, topics in rows}

    # -- reading -------------------------------------------------------------------------------------

    async def _bounds(self, topics: Iterable[str]) -> dict[TopicPartition, tuple[int, int]]:
        """(start_offset, next_offset) of every partition of `topics`: as last read while the file has not changed
        since (see `_known_bounds`), from the file otherwise."""
        names = set(topics)
        version = self._others_version()
        if version != self._known_bounds_version:
            self._known_bounds.clear()
            self._known_bounds_version = version
        known = self._known_bounds
        missing = sorted(names - known.keys())
        if missing:
            rows = self._select(
                "SELECT topic, partition, start_offset, next_offset FROM partitions"
                f" WHERE topic IN ({_placeholders(len(missing))})",
                missing,
            )
            # Only once read: a read that failed leaves nothing known.
            for name in missing:
                known[name] = {}  # a topic that does not exist has no partitions until a write creates it
            for topic, partition, start, end in rows:
                known[topic][TopicPartition(topic, partition)] = (start, end)
        return {tp: bounds for name in names for tp, bounds in known[name].items()}

    async def _records(self, tp: TopicPartition, from_offset: int, limit: int, end: int) -> list[Record]:
        """Up to `limit` records of `tp` from `from_offset`, where `end` is the partition's next offset (its bounds):
        those the records last read of it hold, then the rest from the file."""
        version = self._others_version()  # before reading: a commit after it makes the next read check again
        held: list[Record] = []
        recent = self._kept(tp, version)
        if recent and recent[0].offset <= from_offset:
            first = recent[0].offset
            held = recent[from_offset - first : min(from_offset + limit, end) - first]
            if from_offset + len(held) >= min(from_offset + limit, end):
                return held
        records = self._read_records(tp, from_offset + len(held), limit - len(held))
        self._remember(tp, records, version)
        return held + records if held else records

    def _kept(self, tp: TopicPartition, version: int) -> list[Record] | None:
        """The records kept of `tp`, checked all still in the file when another connection committed since they were
        last known to be (its retention deletes by timestamp, out of order when appends commit out of order)."""
        recent = self._recent.get(tp)
        if recent and recent.version != version:
            ((count,),) = self._select(
                "SELECT count(*) FROM records WHERE topic = ? AND partition = ? AND offset BETWEEN ? AND ?",
                (tp.topic, tp.partition, recent[0].offset, recent[-1].offset),
            )
            if count != len(recent):
                del self._recent[tp]
                return None
            recent.version = version
        return recent

    def _remember(self, tp: TopicPartition, records: list[Record], version: int) -> None:
        """Keep the last `RECENT_RECORDS` records read of `tp` (at most `RECENT_BYTES` of values), offsets
        consecutive: `records` join those kept when they follow on from them (`_records` reads from the file only past
        what is kept); otherwise they replace them if they reach as far. Records read with a gap in their offsets
        (retention deletes by timestamp, and processes' clocks may disagree) are not kept."""
        if not records or records[-1].offset - records[0].offset != len(records) - 1:
            return
        recent = self._recent.get(tp)
        if recent and recent[0].offset + len(recent) == records[0].offset:
            recent.extend(records)
        elif not recent or records[-1].offset >= recent[-1].offset:
            recent = self._recent[tp] = _Kept(records, version)
        # `_records` checked the records kept at `version` (`_kept`) and read these after it.
        recent.version = version
        if len(recent) > RECENT_RECORDS:
            del recent[: len(recent) - RECENT_RECORDS]
        held = 0
        for index in range(len(recent) - 1, -1, -1):  # the newest first: those are what the next group reads
            held += len(recent[index].value)
            if held > RECENT_BYTES:
                del recent[: index + 1]
                break
        if not recent:
            del self._recent[tp]

    def _read_records(self, tp: TopicPartition, from_offset: int, limit: int) -> list[Record]:
        rows = self._select(
            "SELECT offset, key, value, headers, timestamp_ms FROM records"
            " WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
            (tp.topic, tp.partition, from_offset, limit),
        )
        # Every group of the process builds every record of its topics, most only to skip it: the fields are given
        # by position (keywords took half as long again), and a record appended in the same publish as the one before
        # it shares that one's timestamp object.
        records = []
        topic, partition = tp
        last_ms, timestamp = None, EPOCH
        for offset, key, value, headers, timestamp_ms in rows:
            if timestamp_ms != last_ms:
                last_ms, timestamp = timestamp_ms, datetime.fromtimestamp(timestamp_ms / 1000, UTC)
            records.append(Record(topic, partition, offset, key, bytes(value), _headers(headers), timestamp))
        return records

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {tp: end for tp, (_, end) in (await self._bounds([topic])).items()}

    async def read(self, topic: str, from_offsets: Mapping[int, int] | None = None, limit: int = 1000) -> list[Record]:
        starts = from_offsets or {}
        records: list[Record] = []
        for tp, (start, end) in sorted((await self._bounds([topic])).items()):
            offset = max(starts.get(tp.partition, start), start)
            if len(records) >= limit:
                break
            if offset < end:
                records.extend(await self._records(tp, offset, limit - len(records), end))
        return records

    # -- retention -----------------------------------------------------------------------------------

    async def enforce_retention(self, now: datetime | None = None) -> int:
        """Delete records older than their topic's `retention_ms`; returns how many were deleted.

        Offsets are never reused: a partition's head stays where it is and its start moves up to the earliest
        kept record, so a group whose committed offset points before it resumes there. `now` is for tests.

        Statements run on the loop's thread, so the purge goes `retention_batch` records per transaction through
        the (topic, timestamp) index, yielding to the loop between batches: a large purge becomes many pauses
        of a millisecond or two instead of one long stall, and publishers get the write lock in between."""
        now_ms = _now_ms() if now is None else (now - EPOCH) // timedelta(milliseconds=1)
        configs = list(self._select("SELECT name, retention_ms FROM topics WHERE retention_ms IS NOT NULL"))
        deleted = 0
        for topic, retention_ms in configs:

            def purge(db: sqlite3.Connection, topic: str = topic, cutoff: int = now_ms - retention_ms) -> int:
                cursor = db.execute(
                    "DELETE FROM records WHERE rowid IN (SELECT rowid FROM records"
                    " WHERE topic = ? AND timestamp_ms < ? LIMIT ?)",
                    (topic, cutoff, self.retention_batch),
                )
                if cursor.rowcount:
                    db.execute(
                        "UPDATE partitions SET start_offset = COALESCE("
                        " (SELECT MIN(r.offset) FROM records r"
                        "  WHERE r.topic = partitions.topic AND r.partition = partitions.partition),"
                        " next_offset) WHERE topic = ?",
                        (topic,),
                    )
                return int(cursor.rowcount)

            while True:
                batch = await self._write(purge)
                deleted += batch
                if batch:
                    self._recent.clear()  # what is deleted is no longer read, from the next poll on (between batches)
                if batch < self.retention_batch:
                    break
                await asyncio.sleep(0)
        return deleted


class EmbeddedConsumer:
    """A member of a consumer group on an `EmbeddedLog` (implements `LogConsumer`).

    Membership is a row heartbeated by a background task from the first poll until `close`, so a slow handler
    does not lose its partitions; a member silent for `session_timeout` is dead. Every member derives the
    target assignment from the sorted live members, then hands over cooperatively: an owner gives up a
    partition at its next poll (after `on_revoked`, where it commits), and only then may the next member take
    it, at a new generation. A commit is accepted only from the partition's owner at its generation."""

    def __init__(
        self,
        log: EmbeddedLog,
        group: str,
        topics: Sequence[str],
        *,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> None:
        self.group = group
        self.topics = sorted(set(topics))
        self.member_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._log = log
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._positions: dict[TopicPartition, int] = {}
        self._generations: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        # Heartbeats are writes: a few per session timeout keep the member alive without contending on the lock.
        self._heartbeat_every = log.session_timeout / 4
        self._heartbeats: asyncio.Task[None] | None = None
        self._round = 0
        self._closed = False
        # Set by the log when records land in our topics or the group changes (see EmbeddedLog._notify).
        self._wakeup = asyncio.Event()
        # The record types the owner handles, when it says (a consumer worker does): this process's appends of
        # other types wake it only after a delay (EmbeddedLog._notify_appended). None: every append wakes it at once.
        self.handles: frozenset[str] | None = None
        self._late_wakeup: asyncio.TimerHandle | None = None
        # After a look that found nothing or read every readable partition to its end: (the log's `_others_version`,
        # loop time) then. Until another process writes, this process wakes us, or `_relook_every` passes, another
        # look would find nothing.
        self._idle_since: tuple[int, float] | None = None
        # Members that die silently and other processes' partition moves show only with time: look that often.
        self._relook_every = log.session_timeout / 4
        # When the assignment was last worked out: (the log's `_others_version`, its `membership_changes`, loop time).
        self._refreshed: tuple[int, int, float] | None = None

    async def _join(self) -> None:
        if self._heartbeats is None:
            await self._log._heartbeat(self.group, self.member_id, self.topics)
            self._log.membership_changes += 1
            # Members of the group in this process hand over partitions to the newcomer at once: its row is our own
            # write, which does not change the file's version for them (see EmbeddedLog._others_version).
            self._log._notify(set(self.topics))
            self._heartbeats = asyncio.create_task(self._heartbeat_forever(), name=f"heartbeat {self.member_id}")

    def _wake_later(self, delay: float) -> None:
        if self._late_wakeup is None:
            self._late_wakeup = asyncio.get_running_loop().call_later(delay, self._wake_late)

    def _wake_late(self) -> None:
        self._late_wakeup = None
        self._wakeup.set()

    def _cancel_late_wakeup(self) -> None:
        if self._late_wakeup is not None:
            self._late_wakeup.cancel()
            self._late_wakeup = None

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_every)
            try:
                await self._log._heartbeat(self.group, self.member_id, self.topics)
            except (sqlite3.Error, RuntimeError) as error:
                # The log file is locked or gone for a moment: try again at the next beat.
                log.warning("heartbeat failed", group=self.group, member=self.member_id, error=repr(error))

    async def _refresh(self) -> None:
        """Join (once), then move toward the target assignment: give up what is no longer ours (after
        `on_revoked`), notice what was taken from us, take what is ours and free (then `on_assigned`)."""
        if self._closed:
            raise RuntimeError(f"consumer {self.member_id} of group {self.group!r} is closed")
        await self._join()
        # Read before looking: a change during the look (ours included) makes the next look work it out again.
        stamp = (self._log._others_version(), self._log.membership_changes, asyncio.get_running_loop().time())
        db = self._log._read_db
        members = self._log._live_members(db, self.group, time.time())
        # Alive by definition, whatever the table says (e.g. a wall-clock jump made our row look old).
        members[self.member_id] = frozenset(self.topics)
        counts = self._log._partitions_of(db, set().union(*members.values()))
        partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        target = assign_partitions(members, partitions)[self.member_id]
        owners = self._log._owners(db, self.group)
        lost = {tp for tp in self._positions if owners.get(tp) != (self.member_id, self._generations[tp])}
        if lost:
            # Taken over while we were silent past the session timeout: nothing to commit, it is not ours.
            self._forget(lost)
        revoked = set(self._positions) - target
        if revoked:
            if self._on_revoked is not None:
                await self._on_revoked(revoked)
            await self._log._release(self.group, self.member_id, revoked)
            self._forget(revoked)
        wanted = target - set(self._positions)
        free = {
            tp for tp in wanted if tp not in owners or owners[tp][0] == self.member_id or owners[tp][0] not in members
        }
        if free:
            taken = await self._log._claim(self.group, self.member_id, free)
            for tp, generation in sorted(taken.items()):
                committed = await self._log.committed(self.group, tp)
                # Without a commit the group starts at the beginning; retention is applied when fetching.
                self._positions[tp] = 0 if committed is None else committed
                self._generations[tp] = generation
            if taken and self._on_assigned is not None:
                await self._on_assigned(set(taken))
        self._refreshed = stamp  # only once all of it went through: a failed refresh is tried again

    def _forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp, None)
            self._generations.pop(tp, None)
            self._paused.discard(tp)

    async def _fetch(self, max_records: int) -> tuple[list[Record], bool]:
        """The next records of the readable partitions, and whether they were all read to the end their bounds gave
        (nothing left behind by `max_records`)."""
        readable = [tp for tp in self._positions if tp not in self._paused]
        if not readable:
            return [], True
        bounds = await self._log._bounds(tp.topic for tp in readable)
        ready = []
        for tp in sorted(readable):
            start, end = bounds.get(tp, (0, 0))
            # Records before `start` were deleted by retention: resume at the earliest kept one.
            self._positions[tp] = max(self._positions[tp], start)
            if self._positions[tp] < end:
                ready.append((tp, end))
        if not ready:
            return [], True
        # Start at a different partition each round so one busy partition cannot starve the others.
        self._round += 1
        shift = self._round % len(ready)
        records: list[Record] = []
        drained = True
        for tp, end in ready[shift:] + ready[:shift]:
            limit = max_records - len(records)
            if limit <= 0:
                drained = False
                break
            batch = await self._log._records(tp, self._positions[tp], limit, end)
            if batch:
                self._positions[tp] = batch[-1].offset + 1
                records.extend(batch)
            if len(batch) == limit:  # maybe more behind it
                drained = False
        return records, drained

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._wakeup.is_set():
                self._idle_since = None
            # Cleared before looking, so a publish that lands after the look still wakes us.
            self._wakeup.clear()
            records = await self._look(max_records) if self._worth_looking(loop.time()) else []
            remaining = deadline - loop.time()
            if records or remaining <= 0:
                return records
            # Other processes' appends cannot wake us: look again every poll_interval. `asyncio.timeout`, not
            # `wait_for`, which ran the wait in a task of its own: every consumer group of the process waits once per
            # wake-up, and that task and its callbacks were ~3% of the process's CPU per edit (bench/write_cpu.py).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self._log.poll_interval)):
                    await self._wakeup.wait()

    def _worth_looking(self, now: float) -> bool:
        """Whether looking at the log may find something: an idle consumer of `gatherly up` is timed out of its wait
        twice a second, and every service's consumer groups looking each time were most of an idle process's CPU."""
        if self._idle_since is None or self._wakeup.is_set():
            return True
        version, since = self._idle_since
        return now - since >= self._relook_every or self._log._others_version() != version

    async def _look(self, max_records: int) -> list[Record]:
        # The version is read before looking: a commit of another process during the look makes the next one look.
        version, now = self._log._others_version(), asyncio.get_running_loop().time()
        # This look reads whatever a late wake-up was due for (a poll that returns fewer than all of them finds the
        # rest on its next look, which a worker makes at once).
        self._cancel_late_wakeup()
        if not self._assignment_current(version, now):
            await self._refresh()
        records, drained = await self._fetch(max_records)
        # Read to the end: like a look that finds nothing, the next one would find only what was appended since, and
        # that wakes us (this process's appends) or changes the version (another's). Looking again at once after
        # every batch was a bounds query per record handled, for nothing.
        self._idle_since = (version, now) if drained else None
        return records

    def _assignment_current(self, version: int, now: float) -> bool:
        """Whether the assignment worked out last is still the one a refresh would find: no other connection wrote
        to the log, this process changed no membership, ownership or topic, and less than `_relook_every` passed
        (a member dying silently shows only with time). Working it out (live members, owners, partition counts)
        was a third of a busy consumer's poll, and records flowing in change none of it."""
        if self._refreshed is None:
            return False
        refreshed_version, changes, at = self._refreshed
        return (
            version == refreshed_version and changes == self._log.membership_changes and now - at < self._relook_every
        )

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._log._commit(self.group, self.member_id, offsets, self._generations)

    def pause(self, partitions: set[TopicPartition]) -> None:
        self._paused |= partitions

    def resume(self, partitions: set[TopicPartition]) -> None:
        self._paused -= partitions
        self._idle_since = None  # a paused partition's records become readable

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition not in self._positions:
            await self._refresh()
        if partition not in self._positions:
            raise ValueError(f"{partition} is not assigned to member {self.member_id} of group {self.group!r}")
        self._positions[partition] = offset
        self._idle_since = None

    async def assignment(self) -> set[TopicPartition]:
        # Asked once a second per consumer group for the lag metrics: an idle group's assignment changes only as its
        # looks at the log would show (see _worth_looking).
        if self._worth_looking(asyncio.get_running_loop().time()):
            await self._refresh()
        return set(self._positions)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_late_wakeup()
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
        try:
            if self._positions and self._on_revoked is not None:
                await self._on_revoked(set(self._positions))
        finally:
            self._forget(set(self._positions))
            self._log._consumers.discard(self)
            await self._log._leave(self.group, self.member_id)


async def open_embedded_log(path: Path, *, session_timeout: float = 10.0, poll_interval: float = 0.05) -> EmbeddedLog:
    """An `EmbeddedLog` on `path`, started."""
    log = EmbeddedLog(path, session_timeout=session_timeout, poll_interval=poll_interval)
    await log.start()
    return log
