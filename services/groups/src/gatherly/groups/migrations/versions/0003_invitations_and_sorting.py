"""Invitations, the people each group has seen (who may be banned), and the keys of sort=name and sort=members.

`known_people` is filled from today's members, pending requesters and banned people (earlier leavers were not
recorded: they can be banned again once they come back). `name_key` is each name case-folded in Python, as
domain.name_key does, so existing groups sort by name too.

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

USER_ID = sa.String(255)
GROUP_ID = sa.String(36)


def _group_fk() -> sa.ForeignKey:
    return sa.ForeignKey("groups.id", ondelete="CASCADE")


def upgrade() -> None:
    op.add_column("groups", sa.Column("name_key", sa.String(100), nullable=False, server_default=""))
    groups = sa.table("groups", sa.column("id", GROUP_ID), sa.column("name", sa.String), sa.column("name_key"))
    bind = op.get_bind()
    for group_id, name in bind.execute(sa.select(groups.c.id, groups.c.name)).all():
        bind.execute(sa.update(groups).where(groups.c.id == group_id).values(name_key=name.casefold()))
    op.create_index("ix_groups_member_count_id", "groups", ["member_count", "id"])
    op.create_index("ix_groups_name_key_id", "groups", ["name_key", "id"])
    op.create_table(
        "known_people",
        sa.Column("group_id", GROUP_ID, _group_fk(), primary_key=True),
        sa.Column("user_id", USER_ID, primary_key=True),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
    )
    for table, since in (("memberships", "joined_at"), ("join_requests", "requested_at"), ("bans", "banned_at")):
        op.execute(
            f"INSERT INTO known_people (group_id, user_id, first_seen_at) SELECT group_id, user_id, {since} FROM {table}"
            " WHERE NOT EXISTS (SELECT 1 FROM known_people AS k"
            f" WHERE k.group_id = {table}.group_id AND k.user_id = {table}.user_id)"
        )
    op.create_table(
        "invitations",
        sa.Column("id", GROUP_ID, primary_key=True),
        sa.Column("group_id", GROUP_ID, _group_fk(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", USER_ID, nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("max_uses", sa.Integer),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime()),
    )
    op.create_index("ix_invitations_group_id_created_at", "invitations", ["group_id", "created_at"])


def downgrade() -> None:
    op.drop_table("invitations")
    op.drop_table("known_people")
    op.drop_index("ix_groups_name_key_id", "groups")
    op.drop_index("ix_groups_member_count_id", "groups")
    op.drop_column("groups", "name_key")
