"""Objects the storage refuses to delete one by one are tried again later, without holding up the others.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("garbage_retry_at", UtcDateTime()))


def downgrade() -> None:
    op.drop_column("images", "garbage_retry_at")
