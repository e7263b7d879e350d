"""Comments on events, the secret calendar feed tokens, and the read model of people's names and avatars.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("author_id", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_comments_event_id_created_at", "comments", ["event_id", "created_at", "id"])
    op.create_table(
        "calendar_feeds",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "profiles",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("display_name", sa.String(80)),
        sa.Column("avatar", Json),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime()),
    )


def downgrade() -> None:
    op.drop_table("profiles")
    op.drop_table("calendar_feeds")
    op.drop_table("comments")
