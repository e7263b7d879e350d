"""When the group summary's state was the group's: a group.updated older than it (replayed late) is not applied.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # None on the summaries kept before (and on a tombstone): the next message is applied, as it was.
    op.add_column("group_summaries", sa.Column("updated_at", UtcDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("group_summaries") as batch:
        batch.drop_column("updated_at")
