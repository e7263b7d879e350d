"""Tables of the images service (the migrations in migrations/ create the same)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text

from gatherly.kernel.tables import USER_ID, Json, UtcDateTime, kernel_tables

metadata = MetaData()
kernel_tables(metadata)

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_id", USER_ID, nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("variants", Json, nullable=False),  # {variant: storage key}
    Column("width", Integer),
    Column("height", Integer),
    Column("attempts", Integer, nullable=False),
    Column("claimed_until", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("upload_expires_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("garbage", Json, nullable=False),  # storage keys still to delete
    Column("has_garbage", Boolean, nullable=False),
    # Finished while its upload URL still worked: the original is deleted once more after this (a replayed upload).
    Column("original_sweep_at", UtcDateTime()),
    # Storage refused some of the garbage: the next attempt is not before this.
    Column("garbage_retry_at", UtcDateTime()),
    # The processing task's next image and the expiry sweep: both look up by status and a time.
    Index("ix_images_status_claimed_until", "status", "claimed_until"),
    Index("ix_images_status_upload_expires_at", "status", "upload_expires_at"),
    Index("ix_images_has_garbage", "has_garbage"),
    Index("ix_images_owner_id", "owner_id"),  # a deleted account's images
    Index("ix_images_original_sweep_at", "original_sweep_at"),
)

# Data exports this service assembles: the request and the parts arrive in any order (two topics), each recorded
# once; when all are in, the archive is written and kept until expires_at.
exports = Table(
    "exports",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", USER_ID, nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_at", UtcDateTime()),  # None until user.export_requested arrives
    Column("created_at", UtcDateTime(), nullable=False),
    Column("claimed_until", UtcDateTime()),  # an archive being written by one process
    Column("archive_key", String(100)),
    Column("size_bytes", Integer),
    Column("expires_at", UtcDateTime()),
    Index("ix_exports_status_expires_at", "status", "expires_at"),
    Index("ix_exports_status_created_at", "status", "created_at"),
)

export_parts = Table(
    "export_parts",
    metadata,
    Column("export_id", String(36), ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True),
    Column("service", String(32), primary_key=True),
    Column("user_id", USER_ID, nullable=False),
    Column("files", Json, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
)
