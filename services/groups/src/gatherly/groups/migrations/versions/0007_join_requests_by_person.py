"""An index of join requests by the person who asked: `GET /api/groups?pending=me` and `GET /api/groups/requests/mine`
start from the caller's requests (as `?member=me` starts from ix_memberships_user_id), not from every group or every
request.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_join_requests_user_id", "join_requests", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_join_requests_user_id", table_name="join_requests")
