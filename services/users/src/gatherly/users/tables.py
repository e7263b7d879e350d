"""Tables of the users service (the migrations in migrations/ create the same)."""

from __future__ import annotations

from sqlalchemy import Column, Double, ForeignKey, Index, Integer, MetaData, String, Table, Text

from gatherly.kernel.read_models import ready_images_table
from gatherly.kernel.tables import USER_ID, Json, UtcDateTime, kernel_tables

metadata = MetaData()
kernel_tables(metadata)


accounts = Table(
    "accounts",
    metadata,
    Column("id", USER_ID, primary_key=True),
    # NULL only for people who came through an outside identity provider whose tokens carry no email.
    Column("email", String(254), unique=True),
    Column("password_hash", String(255)),  # NULL: signs in elsewhere (outside identity provider)
    Column("created_at", UtcDateTime(), nullable=False),
    Column("confirmed_at", UtcDateTime()),
    # When its deletion was asked for: from then on its access tokens get 401 and its profile is not shown.
    Column("closed_at", UtcDateTime()),
)

profiles = Table(
    "profiles",
    metadata,
    Column("user_id", USER_ID, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("display_name", String(80), nullable=False),
    Column("bio", Text, nullable=False, default=""),
    Column("city", String(100)),
    # Plain doubles: a person's location is shown, never searched, so it needs no PostGIS geography.
    Column("lat", Double),
    Column("lng", Double),
    Column("topics", Json, nullable=False),
    Column("avatar_image_id", String(36)),
    Column("updated_at", UtcDateTime(), nullable=False),
    # The image consumer finds whose avatar became ready by image id.
    Index("ix_profiles_avatar_image_id", "avatar_image_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("family_id", String(36), nullable=False, index=True),
    Column("user_id", USER_ID, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime()),
    Column("revoked_at", UtcDateTime()),
    # Set at rotation; with the presented token it gives the successor again within the grace window.
    Column("successor_nonce", String(64)),
)

one_time_tokens = Table(
    "one_time_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("user_id", USER_ID, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime()),
    Column("password_hash", String(255)),
    Column("display_name", String(80)),
    Column("new_email", String(254)),  # a change-email link: the address it confirms
)

login_throttles = Table(
    "login_throttles",
    metadata,
    Column("email_key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Rate limits per (action, client address), shared by every process of the service; a row idle for a minute is
# full again, so the hourly housekeeping drops rows idle for an hour.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("action", String(32), primary_key=True),
    Column("client", String(100), primary_key=True),
    Column("tokens", Double, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Private keys are stored unencrypted: whoever reads this database could sign tokens. Encrypting them with a
# key from a secret store (KMS, Vault) is the next step when one is available (see the service's README).
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_key", Text, nullable=False),
    Column("public_jwk", Json, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("activates_at", UtcDateTime(), nullable=False),
    Column("retired_at", UtcDateTime()),
)

# Read model of the images service's ready avatars (from image.ready / image.deleted).
avatar_images = ready_images_table(metadata, "avatar_images", image_id_length=36)

# Emails written in the transaction of the change that causes them, delivered by a background task.
mail_outbox = Table(
    "mail_outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("text", Text, nullable=False),
    Column("html", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_error", Text),
    Index("ix_mail_outbox_next_attempt_at", "next_attempt_at"),
)
