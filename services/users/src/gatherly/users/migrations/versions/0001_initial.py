"""The users service's first schema: the kernel's outbox, inbox and saga tables, accounts, profiles, tokens,
signing keys, login throttles, the avatar read model and the mail outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from gatherly.kernel.alembic_scripts import create_kernel_tables, drop_kernel_tables
from gatherly.kernel.tables import Json, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

USER_ID = sa.String(255)


def upgrade() -> None:
    create_kernel_tables()
    op.create_table(
        "accounts",
        sa.Column("id", USER_ID, primary_key=True),
        sa.Column("email", sa.String(254), unique=True),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("confirmed_at", UtcDateTime()),
    )
    op.create_table(
        "profiles",
        sa.Column("user_id", USER_ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("display_name", sa.String(80), nullable=False),
        sa.Column("bio", sa.Text, nullable=False),
        sa.Column("city", sa.String(100)),
        sa.Column("lat", sa.Double),
        sa.Column("lng", sa.Double),
        sa.Column("topics", Json, nullable=False),
        sa.Column("avatar_image_id", sa.String(36)),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_profiles_avatar_image_id", "profiles", ["avatar_image_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(36), nullable=False),
        sa.Column("user_id", USER_ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime()),
        sa.Column("revoked_at", UtcDateTime()),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_table(
        "one_time_tokens",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("user_id", USER_ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime()),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("display_name", sa.String(80)),
    )
    op.create_index("ix_one_time_tokens_user_id", "one_time_tokens", ["user_id"])
    op.create_table(
        "login_throttles",
        sa.Column("email_key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", UtcDateTime()),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("public_jwk", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("activates_at", UtcDateTime(), nullable=False),
        sa.Column("retired_at", UtcDateTime()),
    )
    op.create_table(
        "avatar_images",
        sa.Column("image_id", sa.String(36), primary_key=True),
        sa.Column("owner_id", USER_ID, nullable=False),
        sa.Column("variants", Json, nullable=False),
        sa.Column("ready_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("html", sa.Text),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_mail_outbox_next_attempt_at", "mail_outbox", ["next_attempt_at"])


def downgrade() -> None:
    for table in (
        "mail_outbox",
        "avatar_images",
        "signing_keys",
        "login_throttles",
        "one_time_tokens",
        "refresh_tokens",
        "profiles",
        "accounts",
    ):
        op.drop_table(table)
    drop_kernel_tables()
