"""Occurrences a recurring series adds to its rule and changes: an imported VEVENT's RDATE and RECURRENCE-IDs.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("series", sa.Column("added_days", Json))
    op.add_column("series", sa.Column("changed_days", Json))


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("changed_days")
        batch.drop_column("added_days")
