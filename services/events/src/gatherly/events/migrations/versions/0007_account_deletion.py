"""Account deletion: check-ins of deleted people kept as a count, comments whose author is gone, and an index to
find a person's comments.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.tables import USER_ID

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("anonymous_check_ins", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("comments") as batch:
        batch.alter_column("author_id", existing_type=USER_ID, nullable=True)
    op.create_index("ix_comments_author_id", "comments", ["author_id"])


def downgrade() -> None:
    op.drop_index("ix_comments_author_id", "comments")
    # Comments of deleted members have no author to restore: they go.
    op.execute("DELETE FROM comments WHERE author_id IS NULL")
    with op.batch_alter_table("comments") as batch:
        batch.alter_column("author_id", existing_type=USER_ID, nullable=False)
    with op.batch_alter_table("events") as batch:
        batch.drop_column("anonymous_check_ins")
