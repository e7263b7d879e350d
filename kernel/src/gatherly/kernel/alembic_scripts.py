"""What each service's Alembic scripts call: `run_env` from migrations/env.py, `create_kernel_tables` from the
first revision. Running the migrations (`gatherly migrate`, or at start) is `Database.migrate` in db.py."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from gatherly.kernel.tables import kernel_tables


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
    """Create the outbox, inbox and saga tables (call from a service's first revision)."""
    from alembic import op

    metadata = MetaData()
    kernel_tables(metadata)
    metadata.create_all(op.get_bind())


def drop_kernel_tables() -> None:
    from alembic import op

    metadata = MetaData()
    kernel_tables(metadata)
    metadata.drop_all(op.get_bind())
