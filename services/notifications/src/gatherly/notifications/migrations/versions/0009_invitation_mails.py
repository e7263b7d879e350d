"""Invitations mailed to addresses with no account (until sent), and the addresses that opted out of them (hashed).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invitation_mails",
        sa.Column("invitation_id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("group_name", sa.String(100), nullable=False),
        sa.Column("inviter_name", sa.String(80), nullable=False),
        sa.Column("link", sa.String(500), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "invitation_opt_outs",
        sa.Column("email_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("invitation_opt_outs")
    op.drop_table("invitation_mails")
