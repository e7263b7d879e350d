"""Tables of the images service (the migrations in migrations/ create the same)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, MetaData, String, Table, Text

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
