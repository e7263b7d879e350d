"""PostgreSQL: each event's venue as a PostGIS geography point, generated from lat and lng, with a GiST index that
the nearby search (ST_DWithin, nearest first by `<->`) uses. SQLite keeps its lat/lng indexes and unit vectors.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

from gatherly.kernel.postgis import add_location_sql, drop_location_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in add_location_sql("events"):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in drop_location_sql("events"):
            op.execute(statement)
