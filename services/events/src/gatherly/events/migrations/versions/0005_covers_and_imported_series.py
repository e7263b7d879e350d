"""The read model of ready cover images, the UID an imported recurring series came from, and an index that reads
upcoming events in start order with their place (the nearby search, soonest first).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cover_images",
        sa.Column("image_id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("variants", Json, nullable=False),
        sa.Column("ready_at", UtcDateTime(), nullable=False),
    )
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("source_uid", sa.String(255)))
        batch.create_index("ux_series_group_id_source_uid", ["group_id", "source_uid"], unique=True)
    op.create_index(
        "ix_events_upcoming_places",
        "events",
        ["status", "starts_at", "id", "lat", "lng", "x", "y", "z", "group_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_events_upcoming_places", "events")
    with op.batch_alter_table("series") as batch:
        batch.drop_index("ux_series_group_id_source_uid")
        batch.drop_column("source_uid")
    op.drop_table("cover_images")
