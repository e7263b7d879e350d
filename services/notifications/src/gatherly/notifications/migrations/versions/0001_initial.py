"""The notifications service's first schema: the kernel's outbox, inbox and saga tables.

Revision ID: 0001
Revises:
"""

from gatherly.kernel.alembic_scripts import create_kernel_tables, drop_kernel_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables()


def downgrade() -> None:
    drop_kernel_tables()
