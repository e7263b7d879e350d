"""The kernel's table of revoked token subjects (accounts deleted or locked), in every service database.

The kernel's own Alembic branch (label `kernel`): each service's chain and this one run side by side
(`Database.migrate` upgrades to `heads`), so a kernel table added later needs no revision in any service.

Revision ID: kernel_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import USER_ID, UtcDateTime

revision = "kernel_0001"
down_revision = None
branch_labels = ("kernel",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_subjects",
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("locked", sa.Boolean, nullable=False),
        sa.Column("not_before", UtcDateTime()),
        sa.Column("as_of", UtcDateTime(), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_revoked_subjects_changed_at", "revoked_subjects", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_revoked_subjects_changed_at", table_name="revoked_subjects")
    op.drop_table("revoked_subjects")
