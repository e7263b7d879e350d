"""The outbox's NOTIFY trigger on PostgreSQL (kernel/tables.py OUTBOX_NOTIFY_DDL): a commit that wrote outbox rows
wakes the relay at once, from whichever process it came.

As for kernel_0002, the kernel's branch may run before or after a service's chain: an outbox created by a service's
first revision from now on gets the trigger with the table; this adds it where an outbox exists already (idempotent:
the function is replaced and the trigger made again). Nothing on SQLite, whose relay shares its writers' process.

Revision ID: kernel_0003
Revises: kernel_0002
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import OUTBOX_NOTIFY_DDL

revision = "kernel_0003"
down_revision = "kernel_0002"
branch_labels = None
depends_on = None


def _postgresql_outbox() -> bool:
    bind = op.get_bind()
    return bind.dialect.name == "postgresql" and sa.inspect(bind).has_table("outbox")


def upgrade() -> None:
    if _postgresql_outbox():
        for statement in OUTBOX_NOTIFY_DDL:
            op.execute(statement)


def downgrade() -> None:
    if _postgresql_outbox():
        op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS gatherly_outbox_notify()")
