"""Email invitations find the recipient by address: an index on recipients.email (they scanned the table).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_recipients_email", "recipients", ["email"])


def downgrade() -> None:
    op.drop_index("ix_recipients_email", "recipients")
