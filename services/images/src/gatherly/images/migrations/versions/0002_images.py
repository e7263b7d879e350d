"""Image records: slot, status, variants' storage keys, the processing claim and the objects still to delete.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import Json, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("variants", Json, nullable=False),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claimed_until", UtcDateTime()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("upload_expires_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime()),
        sa.Column("garbage", Json, nullable=False),
        sa.Column("has_garbage", sa.Boolean, nullable=False),
    )
    op.create_index("ix_images_status_claimed_until", "images", ["status", "claimed_until"])
    op.create_index("ix_images_status_upload_expires_at", "images", ["status", "upload_expires_at"])
    op.create_index("ix_images_has_garbage", "images", ["has_garbage"])
    op.create_index("ix_images_owner_id", "images", ["owner_id"])


def downgrade() -> None:
    op.drop_table("images")
