"""Recurring series and the occurrences' link to them, the UID imported events came from, and an index for the
head of a waitlist.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("group_id", sa.String(36), nullable=False),
        sa.Column("rule", sa.String(300), nullable=False),
        sa.Column("first_start", sa.String(19), nullable=False),
        sa.Column("template", Json, nullable=False),
        sa.Column("generated_through", sa.String(10)),
        sa.Column("ends_before", sa.String(10)),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("series_id", sa.String(36)))
        batch.add_column(sa.Column("occurrence_date", sa.String(10)))
        batch.create_index("ux_events_series_id_occurrence_date", ["series_id", "occurrence_date"], unique=True)
        batch.add_column(sa.Column("source_uid", sa.String(255)))
        batch.create_index("ux_events_group_id_source_uid", ["group_id", "source_uid"], unique=True)
    op.create_index("ix_rsvps_event_id_status_queue_no", "rsvps", ["event_id", "status", "queue_no"])


def downgrade() -> None:
    op.drop_index("ix_rsvps_event_id_status_queue_no", "rsvps")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ux_events_group_id_source_uid")
        batch.drop_column("source_uid")
        batch.drop_index("ux_events_series_id_occurrence_date")
        batch.drop_column("occurrence_date")
        batch.drop_column("series_id")
    op.drop_table("series")
