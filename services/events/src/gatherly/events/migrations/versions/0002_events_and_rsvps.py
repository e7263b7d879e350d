"""Events and their RSVPs, and the read models of groups (with their topics) and of memberships with their roles.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("group_id", sa.String(36), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("venue_name", sa.String(200)),
        sa.Column("venue_address", sa.String(500)),
        sa.Column("lat", sa.Double),
        sa.Column("lng", sa.Double),
        sa.Column("online_url", sa.String(2000)),
        sa.Column("capacity", sa.Integer),
        sa.Column("guest_limit", sa.Integer, nullable=False),
        sa.Column("rsvp_opens_at", UtcDateTime()),
        sa.Column("rsvp_closes_at", UtcDateTime()),
        sa.Column("cover_image_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("going_count", sa.Integer, nullable=False),
        sa.Column("waitlist_count", sa.Integer, nullable=False),
        sa.Column("queue_counter", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("cancelled_at", UtcDateTime()),
    )
    op.create_index("ix_events_group_id_starts_at", "events", ["group_id", "starts_at"])
    op.create_index("ix_events_starts_at_id", "events", ["starts_at", "id"])
    op.create_index("ix_events_lat_lng", "events", ["lat", "lng"])
    op.create_table(
        "rsvps",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("guests", sa.Integer, nullable=False),
        sa.Column("queue_no", sa.Integer, nullable=False),
        sa.Column("responded_at", UtcDateTime(), nullable=False),
        sa.Column("checked_in_at", UtcDateTime()),
    )
    op.create_index("ix_rsvps_user_id", "rsvps", ["user_id", "status"])
    op.create_table(
        "group_summaries",
        sa.Column("group_id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(60), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("topics", Json, nullable=False),
        sa.Column("city", sa.String(100)),
        sa.Column("lat", sa.Double),
        sa.Column("lng", sa.Double),
        sa.Column("deleted_at", UtcDateTime()),
    )
    op.create_table(
        "group_topics",
        sa.Column("group_id", sa.String(36), primary_key=True),
        sa.Column("topic", sa.String(50), primary_key=True),
    )
    op.create_index("ix_group_topics_topic", "group_topics", ["topic", "group_id"])
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])


def downgrade() -> None:
    for table in ("group_members", "group_topics", "group_summaries", "rsvps", "events"):
        op.drop_table(table)
