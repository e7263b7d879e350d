"""Who scheduled each kept event, when, and the message that told its members: a member whose joining is handled after
the event (another topic, so no order between them) is told of it then, under the same cause.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("scheduled_at", UtcDateTime()))
        batch.add_column(sa.Column("scheduled_by", sa.String(255)))
        batch.add_column(sa.Column("scheduled_cause", sa.String(128)))
        batch.create_index("ix_events_group_scheduled_at", ["group_id", "scheduled_at"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_group_scheduled_at")
        batch.drop_column("scheduled_cause")
        batch.drop_column("scheduled_by")
        batch.drop_column("scheduled_at")
