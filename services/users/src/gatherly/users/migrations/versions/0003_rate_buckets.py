"""Rate limits (sign-up, login, password reset per client address) kept in the database, so every process of the
service shares them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("action", sa.String(32), primary_key=True),
        sa.Column("client", sa.String(100), primary_key=True),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
