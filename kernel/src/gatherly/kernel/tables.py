"""Tables the kernel keeps in every service's database: the outbox, the consumer inbox, saga state, the relay lease,
revoked token subjects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Dialect

# SQLAlchemy's text for a time on SQLite (`DATETIME`'s default storage format), and the same with positions.
_SQLITE_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
_SQLITE_TEXT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python. SQLite keeps no offset, so values read back
    naive are marked UTC; aware values are converted to UTC before they are written. Use it for every time column."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: give a timezone")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, an aware datetime written as SQLAlchemy writes it, in one step: its chain (this type's
        `process_bind_param`, then the SQLite type's processor, which builds a dict of seven fields for a `%` format)
        took ~2 µs a value, and every event's path binds several (the outbox row, each inbox claim, each read model's
        time). Anything else (None, a naive time, another type) goes through SQLAlchemy's chain, so gets its answer
        or its error (tests/test_tables.py pins both)."""
        general = super().bind_processor(dialect)
        impl = self.impl_instance.dialect_impl(dialect)
        if general is None or not isinstance(impl, SQLITE_DATETIME) or impl._storage_format != _SQLITE_FORMAT:
            return general

        def process(value: Any) -> Any:
            if value.__class__ is not datetime or value.tzinfo is None:
                return general(value)
            utc = value.astimezone(UTC)
            return _SQLITE_TEXT % (
                utc.year,
                utc.month,
                utc.day,
                utc.hour,
                utc.minute,
                utc.second,
                utc.microsecond,
            )

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A user id is the users service's UUID or an outside identity provider's `sub` (up to 255 characters in OIDC).
USER_ID = String(255)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SequenceId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


# On PostgreSQL a commit that wrote to the outbox NOTIFYs this channel, so the relay wakes at once whichever process
# (or replica) committed: without it only the relay's own process woke it, the others' rows waited for its poll.
# A statement trigger, not a statement of the unit of work: no extra round trip, and NOTIFY is sent at commit only
# (never for a rolled-back transaction, once per transaction however many rows).
OUTBOX_CHANNEL = "gatherly_outbox"
OUTBOX_NOTIFY_DDL = (
    "CREATE OR REPLACE FUNCTION gatherly_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{OUTBOX_CHANNEL}', ''); RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS outbox_notify ON outbox",
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION gatherly_outbox_notify()",
)


def outbox_table(metadata: MetaData) -> Table:
    """The transactional outbox. `id`, `aggregatetype`, `aggregateid`, `type` and `payload` are the columns
    Debezium's Outbox Event Router reads; the rest carry the envelope (as extra headers there). On PostgreSQL it
    gets the NOTIFY trigger (`OUTBOX_NOTIFY_DDL`; kernel_0003 adds it to outboxes made before)."""
    table = _outbox_columns(metadata)
    for statement in OUTBOX_NOTIFY_DDL:
        event.listen(table, "after_create", DDL(statement).execute_if(dialect="postgresql"))
    return table


def _outbox_columns(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("seq", SequenceId, primary_key=True, autoincrement=True),
        Column("id", String(36), nullable=False, unique=True),
        Column("aggregatetype", String(64), nullable=False),
        Column("aggregateid", String(128), nullable=False),
        Column("type", String(128), nullable=False),
        Column("schema_version", Integer, nullable=False),
        Column("payload", Json, nullable=False),
        Column("occurred_at", UtcDateTime(), nullable=False),
        Column("correlation_id", String(64)),
        Column("causation_id", String(64)),
        Column("traceparent", String(128)),
        # Added by kernel_0002 to databases made before it (the first revision creates the table as defined here).
        Column("tracestate", String(512)),
        # AUTOINCREMENT: without it SQLite hands out max(rowid)+1, so once the relay has deleted every published
        # row the next event gets seq 1 again, below the relay's cursor, and is never published.
        sqlite_autoincrement=True,
    )


def inbox_table(metadata: MetaData) -> Table:
    """Message ids each consumer has applied: written in the handler's transaction, it makes handlers idempotent."""
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(128), primary_key=True),
        Column("message_id", String(36), primary_key=True),
        Column("processed_at", UtcDateTime(), nullable=False),
        Index("ix_inbox_processed_at", "processed_at"),
    )


def saga_table(metadata: MetaData) -> Table:
    """Persisted state of long-running work that spans services (account deletion, group deletion)."""
    return Table(
        "sagas",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("kind", String(64), nullable=False),
        Column("status", String(32), nullable=False),
        Column("step", String(64), nullable=False),
        Column("data", Json, nullable=False),
        Column("reason", Text),
        Column("deadline_at", UtcDateTime()),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("updated_at", UtcDateTime(), nullable=False),
        Index("ix_sagas_status_deadline", "status", "deadline_at"),
    )


def relay_lease_table(metadata: MetaData) -> Table:
    """Which relay process may publish a SQLite service database's outbox, until when (a lease it keeps renewing).
    PostgreSQL uses an advisory lock instead (kernel/relay.py); the table exists there too, unused."""
    return Table(
        "relay_lease",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("holder", String(64), nullable=False),
        # Wall-clock seconds (time.time()): the relays sharing a SQLite file share the machine's clock.
        Column("expires_at", Float, nullable=False),
    )


def revoked_subjects_table(metadata: MetaData) -> Table:
    """Subjects whose access tokens every service refuses: deleted, or locked by an administrator (written from
    the log by the kernel's consumer, read by every process: kernel/revocation.py)."""
    return Table(
        "revoked_subjects",
        metadata,
        Column("user_id", USER_ID, primary_key=True),
        Column("deleted", Boolean, nullable=False),
        Column("locked", Boolean, nullable=False),
        # Tokens issued (`iat`) before this stay refused: set by an unlock.
        Column("not_before", UtcDateTime()),
        # When the newest event applied to the row happened: an older one arriving later changes nothing.
        Column("as_of", UtcDateTime(), nullable=False),
        # When the row was last written: what processes refresh from.
        Column("changed_at", UtcDateTime(), nullable=False),
        Index("ix_revoked_subjects_changed_at", "changed_at"),
    )


# Created by each service's first revision (alembic_scripts.create_kernel_tables).
FIRST_REVISION_TABLES = {
    "outbox": outbox_table,
    "inbox": inbox_table,
    "sagas": saga_table,
    "relay_lease": relay_lease_table,
}
# Added later: created by the kernel's own migrations (kernel/migrations), which every service database runs too.
LATER_TABLES = {"revoked_subjects": revoked_subjects_table}


def kernel_tables(metadata: MetaData) -> list[Table]:
    """Add the kernel's tables to a service's metadata (idempotent per metadata)."""
    makers = FIRST_REVISION_TABLES | LATER_TABLES
    return [metadata.tables[name] if name in metadata.tables else make(metadata) for name, make in makers.items()]


# The kernel's own handle on its tables (a service's metadata gets copies through `kernel_tables`).
KERNEL_METADATA = MetaData()
kernel_tables(KERNEL_METADATA)
