"""Dates a recurring series skips: an imported VEVENT's EXDATE.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("series", sa.Column("excluded_days", Json))


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("excluded_days")
