"""What the weekly digest needs: where recipients and events are, and which groups are public.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recipients") as table:
        table.add_column(sa.Column("lat", sa.Double))
        table.add_column(sa.Column("lng", sa.Double))
    with op.batch_alter_table("events") as table:
        table.add_column(sa.Column("lat", sa.Double))
        table.add_column(sa.Column("lng", sa.Double))
    with op.batch_alter_table("groups") as table:
        table.add_column(sa.Column("visibility", sa.String(16)))
    op.create_index("ix_events_starts_at", "events", ["starts_at"])
    op.create_index("ix_events_lat_lng", "events", ["lat", "lng"])


def downgrade() -> None:
    op.drop_index("ix_events_lat_lng", "events")
    op.drop_index("ix_events_starts_at", "events")
    with op.batch_alter_table("groups") as table:
        table.drop_column("visibility")
    with op.batch_alter_table("events") as table:
        table.drop_column("lng")
        table.drop_column("lat")
    with op.batch_alter_table("recipients") as table:
        table.drop_column("lng")
        table.drop_column("lat")
