"""The reminder schedule.

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
        "reminders",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("hours_before", sa.Integer, primary_key=True),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime()),
    )
    op.create_index("ix_reminders_sent_at_due_at", "reminders", ["sent_at", "due_at"])
    op.create_index("ix_reminders_user_id", "reminders", ["user_id"])


def downgrade() -> None:
    op.drop_table("reminders")
