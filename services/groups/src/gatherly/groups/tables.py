"""Tables of the groups service (the migrations in migrations/ create the same)."""

from __future__ import annotations

from sqlalchemy import Column, Double, ForeignKey, Index, Integer, MetaData, String, Table, Text

from gatherly.kernel.read_models import ready_images_table
from gatherly.kernel.tables import USER_ID, Json, UtcDateTime, kernel_tables

metadata = MetaData()
kernel_tables(metadata)

GROUP_ID = String(36)

groups = Table(
    "groups",
    metadata,
    Column("id", GROUP_ID, primary_key=True),
    Column("slug", String(60), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("description", Text, nullable=False),
    Column("search_text", Text, nullable=False),  # name + description, case-folded (see domain.search_text)
    Column("topics", Json, nullable=False),
    Column("city", String(100)),
    Column("lat", Double),
    Column("lng", Double),
    Column("visibility", String(16), nullable=False),
    Column("join_policy", String(16), nullable=False),
    Column("questions", Json, nullable=False),
    Column("banner_image_id", String(64)),
    # The name case-folded (domain.name_key): what sort=name orders by, the same on both databases.
    Column("name_key", String(100), nullable=False, server_default=""),
    Column("member_count", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("deleted_at", UtcDateTime()),
    # The nearby search narrows to a latitude band with this index, then checks longitude and exact distance.
    Index("ix_groups_lat_lng", "lat", "lng"),
    # The default listing is newest first, paged by (created_at, id).
    Index("ix_groups_created_at_id", "created_at", "id"),
    # sort=members and sort=name, paged by (key, id).
    Index("ix_groups_member_count_id", "member_count", "id"),
    Index("ix_groups_name_key_id", "name_key", "id"),
)

# One row per topic of a group: `?topic=` is an indexed lookup instead of a scan of JSON lists.
group_topics = Table(
    "group_topics",
    metadata,
    Column("group_id", GROUP_ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("topic", String(50), primary_key=True),
    Index("ix_group_topics_topic", "topic", "group_id"),
)

memberships = Table(
    "memberships",
    metadata,
    Column("group_id", GROUP_ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("role", String(32), nullable=False),
    Column("joined_at", UtcDateTime(), nullable=False),
    Index("ix_memberships_user_id", "user_id"),  # `?member=me`
)

join_requests = Table(
    "join_requests",
    metadata,
    Column("group_id", GROUP_ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("answers", Json, nullable=False),  # [{question, answer}]: the questions as they were asked
    Column("requested_at", UtcDateTime(), nullable=False),
    Index("ix_join_requests_user_id", "user_id"),  # `?pending=me`, the caller's own requests
)

bans = Table(
    "bans",
    metadata,
    Column("group_id", GROUP_ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("banned_by", USER_ID, nullable=False),
    Column("banned_at", UtcDateTime(), nullable=False),
)

# Everyone the group has seen: founders, members, requesters, past ones too. Only they may be banned (a ban on an
# id the group never saw is a typo or a probe, 404); the row outlives the membership, so someone who left can be.
known_people = Table(
    "known_people",
    metadata,
    Column("group_id", GROUP_ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", USER_ID, primary_key=True),
    Column("first_seen_at", UtcDateTime(), nullable=False),
)

# Invitations by link or email: only the SHA-256 of the token is kept (a leaked table lets nobody in).
invitations = Table(
    "invitations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("group_id", GROUP_ID, ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_by", USER_ID, nullable=False),
    Column("email", String(254)),
    Column("max_uses", Integer),
    Column("uses", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime()),
    # SHA-256 of `email` (kernel.addresses): the invitations of an account being deleted are found by it.
    Column("email_hash", String(64)),
    # The invited person's account was deleted: `email` and its hash are erased, and the invitation admits nobody.
    Column("redacted_at", UtcDateTime()),
    Index("ix_invitations_group_id_created_at", "group_id", "created_at"),
    Index("ix_invitations_email_hash", "email_hash"),
    # The daily bound on each inviter's email invitations.
    Index("ix_invitations_created_by_created_at", "created_by", "created_at"),
)

# Read model of the users service's profiles (user.profile_updated / user.deleted): member lists need no call, and
# an email invitation is matched to its person by the hash of their confirmed address.
member_profiles = Table(
    "member_profiles",
    metadata,
    Column("user_id", USER_ID, primary_key=True),
    Column("display_name", String(80)),
    Column("avatar", Json),
    # SHA-256 of the confirmed email (kernel.addresses): whom an email invitation is for, without the address.
    Column("email_hash", String(64)),
    Column("updated_at", UtcDateTime(), nullable=False),
    # A tombstone: a profile update that arrives after the deletion must not bring the person back.
    Column("deleted_at", UtcDateTime()),
)

# Read model of the images service's ready group banners (image.ready / image.deleted).
banner_images = ready_images_table(metadata, "banner_images", image_id_length=64)
