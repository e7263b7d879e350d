"""A replayed upload URL must not leave an original behind: when to delete the original once more.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("original_sweep_at", UtcDateTime()))
    op.create_index("ix_images_original_sweep_at", "images", ["original_sweep_at"])


def downgrade() -> None:
    op.drop_index("ix_images_original_sweep_at", "images")
    op.drop_column("images", "original_sweep_at")
