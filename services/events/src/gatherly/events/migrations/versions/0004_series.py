"""Recurring series and the occurrences' link to them, the UID imported events came from, an index for the head of
a waitlist, and the venue as a point on the unit sphere with an index covering the nearby search.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from gatherly.events.domain import Location, unit_vector
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
        batch.add_column(sa.Column("x", sa.Double))
        batch.add_column(sa.Column("y", sa.Double))
        batch.add_column(sa.Column("z", sa.Double))
        batch.create_index("ux_events_group_id_source_uid", ["group_id", "source_uid"], unique=True)
    op.create_index("ix_rsvps_event_id_status_queue_no", "rsvps", ["event_id", "status", "queue_no"])
    op.drop_index("ix_events_lat_lng", "events")
    op.create_index("ix_events_nearby", "events", ["lat", "lng", "x", "y", "z", "status", "starts_at", "group_id", "id"])
    events = sa.table("events", sa.column("id"), sa.column("lat"), sa.column("lng"), *(sa.column(c) for c in "xyz"))
    connection = op.get_bind()
    located = connection.execute(sa.select(events.c.id, events.c.lat, events.c.lng).where(events.c.lat.is_not(None)))
    for event_id, lat, lng in located.fetchall():
        x, y, z = unit_vector(Location(lat, lng))
        connection.execute(sa.update(events).where(events.c.id == event_id).values(x=x, y=y, z=z))


def downgrade() -> None:
    op.drop_index("ix_events_nearby", "events")
    op.create_index("ix_events_lat_lng", "events", ["lat", "lng"])
    op.drop_index("ix_rsvps_event_id_status_queue_no", "rsvps")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("z")
        batch.drop_column("y")
        batch.drop_column("x")
        batch.drop_index("ux_events_group_id_source_uid")
        batch.drop_column("source_uid")
        batch.drop_index("ux_events_series_id_occurrence_date")
        batch.drop_column("occurrence_date")
        batch.drop_column("series_id")
    op.drop_table("series")
