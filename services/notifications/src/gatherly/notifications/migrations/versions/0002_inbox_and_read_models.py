"""The inbox, preferences, deliveries, stream tickets and kept secrets; the read models of recipients, group members,
events and attendees.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json, SequenceId, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

USER_ID = sa.String(255)
ID = sa.String(36)


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("display_name", sa.String(80)),
        sa.Column("confirmed", sa.Boolean, nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("deleted_at", UtcDateTime()),
    )
    op.create_table(
        "groups",
        sa.Column("group_id", ID, primary_key=True),
        sa.Column("deleted_at", UtcDateTime()),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", ID, primary_key=True),
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    op.create_table(
        "events",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("group_id", ID, nullable=False),
        sa.Column("group_name", sa.String(100), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("place", sa.String(800), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
    )
    op.create_table(
        "attendees",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_attendees_user_id", "attendees", ["user_id"])
    op.create_table(
        "notifications",
        sa.Column("seq", SequenceId, primary_key=True, autoincrement=True),
        sa.Column("id", ID, nullable=False, unique=True),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("link", sa.String(500), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("read_at", UtcDateTime()),
        sqlite_autoincrement=True,
    )
    op.create_index("ux_notifications_source_user_id", "notifications", ["source", "user_id"], unique=True)
    op.create_index("ix_notifications_user_id_seq", "notifications", ["user_id", "seq"])
    op.create_index("ix_notifications_user_id_read_at", "notifications", ["user_id", "read_at", "seq"])
    op.create_table(
        "preferences",
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("email", Json, nullable=False),
        sa.Column("push", Json, nullable=False),
        sa.Column("reminder_hours", Json, nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("notification_id", ID, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime()),
    )
    op.create_index("ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "secrets",
        "stream_tickets",
        "deliveries",
        "preferences",
        "notifications",
        "attendees",
        "events",
        "group_members",
        "groups",
        "recipients",
    ):
        op.drop_table(table)
