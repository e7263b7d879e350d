"""PostgreSQL: each group's place as a PostGIS geography point, generated from lat and lng, with a GiST index that
the nearby search (ST_DWithin, nearest first by `<->`) uses. SQLite keeps the lat/lng index (geo.bounding_box).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from gatherly.kernel.postgis import add_location_sql, drop_location_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in add_location_sql("groups"):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in drop_location_sql("groups"):
            op.execute(statement)
