"""The outbox's `tracestate` column: the W3C tracestate stored beside each row's traceparent (kernel/tracing.py).

The outbox comes from each service's first revision, which creates it as `kernel/tables.py` defines it today, and
the kernel's branch may run before or after a service's chain: so the column is added only where an outbox exists
without it (a database made before this revision); a newer outbox already has it, and one not yet created will.

Revision ID: kernel_0002
Revises: kernel_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "kernel_0002"
down_revision = "kernel_0001"
branch_labels = None
depends_on = None


def _outbox_columns() -> set[str] | None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("outbox"):
        return None
    return {column["name"] for column in inspector.get_columns("outbox")}


def upgrade() -> None:
    columns = _outbox_columns()
    if columns is not None and "tracestate" not in columns:
        with op.batch_alter_table("outbox") as batch:
            batch.add_column(sa.Column("tracestate", sa.String(512)))


def downgrade() -> None:
    columns = _outbox_columns()
    if columns is not None and "tracestate" in columns:
        with op.batch_alter_table("outbox") as batch:
            batch.drop_column("tracestate")
