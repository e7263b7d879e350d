"""Push receipts: which subscriptions already took a push send, so its retry skips them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_receipts",
        sa.Column("delivery_id", sa.String(64), primary_key=True),
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_push_receipts_subscription_id", "push_receipts", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_push_receipts_subscription_id", "push_receipts")
    op.drop_table("push_receipts")
