"""The groups service's first schema: the kernel's outbox, inbox and saga tables, groups and their topics,
memberships, join requests, bans, and the read models of member profiles and banner images.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.alembic_scripts import create_kernel_tables, drop_kernel_tables
from gatherly.kernel.tables import Json, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

USER_ID = sa.String(255)
GROUP_ID = sa.String(36)


def _group_fk() -> sa.ForeignKey:
    return sa.ForeignKey("groups.id", ondelete="CASCADE")


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "groups",
        sa.Column("id", GROUP_ID, primary_key=True),
        sa.Column("slug", sa.String(60), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("topics", Json, nullable=False),
        sa.Column("city", sa.String(100)),
        sa.Column("lat", sa.Double),
        sa.Column("lng", sa.Double),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("join_policy", sa.String(16), nullable=False),
        sa.Column("questions", Json, nullable=False),
        sa.Column("banner_image_id", sa.String(64)),
        sa.Column("member_count", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime()),
    )
    op.create_index("ix_groups_lat_lng", "groups", ["lat", "lng"])
    op.create_index("ix_groups_created_at_id", "groups", ["created_at", "id"])
    op.create_table(
        "group_topics",
        sa.Column("group_id", GROUP_ID, _group_fk(), primary_key=True),
        sa.Column("topic", sa.String(50), primary_key=True),
    )
    op.create_index("ix_group_topics_topic", "group_topics", ["topic", "group_id"])
    op.create_table(
        "memberships",
        sa.Column("group_id", GROUP_ID, _group_fk(), primary_key=True),
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("joined_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.create_table(
        "join_requests",
        sa.Column("group_id", GROUP_ID, _group_fk(), primary_key=True),
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("answers", Json, nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "bans",
        sa.Column("group_id", GROUP_ID, _group_fk(), primary_key=True),
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("banned_by", USER_ID, nullable=False),
        sa.Column("banned_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "member_profiles",
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("display_name", sa.String(80)),
        sa.Column("avatar", Json),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime()),
    )
    op.create_table(
        "banner_images",
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("owner_id", USER_ID, nullable=False),
        sa.Column("variants", Json, nullable=False),
        sa.Column("ready_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("banner_images", "member_profiles", "bans", "join_requests", "memberships", "group_topics", "groups"):
        op.drop_table(table)
    drop_kernel_tables()
