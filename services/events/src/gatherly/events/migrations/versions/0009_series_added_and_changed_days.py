"""Occurrences a recurring series adds to its rule and changes: an imported VEVENT's RDATE and RECURRENCE-IDs.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("series", sa.Column("added_days", Json))
    op.add_column("series", sa.Column("changed_days", Json))


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("changed_days")
        batch.drop_column("added_days")
