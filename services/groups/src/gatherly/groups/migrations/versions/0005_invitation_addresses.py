"""Email invitations tied to their address: the hash of each person's confirmed email in the profiles' read model,
and an index for the daily bound on each inviter's email invitations.

Profiles read before this revision have no hash until the person's next `user.profile_updated`; replaying the
read model (`gatherly replay groups.profiles`) fills them all at once.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("member_profiles", sa.Column("email_hash", sa.String(64)))
    op.create_index("ix_invitations_created_by_created_at", "invitations", ["created_by", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_invitations_created_by_created_at", table_name="invitations")
    with op.batch_alter_table("member_profiles") as batch:
        batch.drop_column("email_hash")
