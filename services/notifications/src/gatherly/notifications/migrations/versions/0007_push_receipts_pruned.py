"""Push receipts are pruned by age: an index on when they were recorded.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_push_receipts_delivered_at", "push_receipts", ["delivered_at"])


def downgrade() -> None:
    op.drop_index("ix_push_receipts_delivered_at", "push_receipts")
