"""Data exports: the parts of each export as they arrive, and the archive written when all are in.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import USER_ID, Json, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_at", UtcDateTime()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("claimed_until", UtcDateTime()),
        sa.Column("archive_key", sa.String(100)),
        sa.Column("size_bytes", sa.Integer),
        sa.Column("expires_at", UtcDateTime()),
    )
    op.create_index("ix_exports_status_expires_at", "exports", ["status", "expires_at"])
    op.create_index("ix_exports_status_created_at", "exports", ["status", "created_at"])
    op.create_table(
        "export_parts",
        sa.Column("export_id", sa.String(36), sa.ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("service", sa.String(32), primary_key=True),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("files", Json, nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("export_parts")
    op.drop_table("exports")
