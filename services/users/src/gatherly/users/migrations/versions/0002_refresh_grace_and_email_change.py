"""A rotated refresh token remembers the nonce its successor was derived from (the refresh grace window), a
link token can carry the new address of an email change, and an account notes when its deletion was asked for.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("successor_nonce", sa.String(64)))
    op.add_column("one_time_tokens", sa.Column("new_email", sa.String(254)))
    op.add_column("accounts", sa.Column("closed_at", UtcDateTime()))


def downgrade() -> None:
    op.drop_column("accounts", "closed_at")
    op.drop_column("one_time_tokens", "new_email")
    op.drop_column("refresh_tokens", "successor_nonce")
