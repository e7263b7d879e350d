"""Email invitations of deleted accounts: the hash of each invited address (to find them when the account is deleted)
and `redacted_at`, set when the address is erased — the invitation then admits nobody (it is not an open link).

Existing email invitations get their hash here, from their address.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.addresses import address_hash
from gatherly.kernel.tables import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invitations") as batch:
        batch.add_column(sa.Column("email_hash", sa.String(64)))
        batch.add_column(sa.Column("redacted_at", UtcDateTime()))
    op.create_index("ix_invitations_email_hash", "invitations", ["email_hash"])
    bind = op.get_bind()
    table = sa.table("invitations", sa.column("id", sa.String), sa.column("email", sa.String), sa.column("email_hash"))
    rows = bind.execute(sa.select(table.c.id, table.c.email).where(table.c.email.is_not(None))).all()
    for invitation_id, email in rows:
        bind.execute(table.update().where(table.c.id == invitation_id).values(email_hash=address_hash(email)))


def downgrade() -> None:
    op.drop_index("ix_invitations_email_hash", table_name="invitations")
    with op.batch_alter_table("invitations") as batch:
        batch.drop_column("redacted_at")
        batch.drop_column("email_hash")
