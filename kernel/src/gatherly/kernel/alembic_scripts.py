"""What each service's Alembic scripts call: `run_env` from migrations/env.py, `create_kernel_tables` from the
first revision. Running the migrations (`gatherly migrate`, or at start) is `Database.migrate` in db.py."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from gatherly.kernel.tables import FIRST_REVISION_TABLES


def run_env(target_metadata: MetaData) -> None:
    """Run migrations on the connection handed over by `Database.migrate` (online mode only)."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("Gatherly migrations run through `gatherly migrate` or at service start")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_kernel_tables() -> None:
    """Create the outbox, inbox, saga and relay-lease tables (call from a service's first revision). Kernel tables
    added since come from the kernel's own migrations (kernel/migrations), a branch every service runs too."""
    from alembic import op

    metadata = _first_revision_tables()
    metadata.create_all(op.get_bind())


def drop_kernel_tables() -> None:
    from alembic import op

    _first_revision_tables().drop_all(op.get_bind())


def _first_revision_tables() -> MetaData:
    metadata = MetaData()
    for make in FIRST_REVISION_TABLES.values():
        make(metadata)
    return metadata
