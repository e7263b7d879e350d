"""Request and response shapes of the images service's HTTP API (the OpenAPI schema is made from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gatherly.contracts.users import ImageVariants
from gatherly.images.domain import ACCEPTED_TYPES, MAX_BYTES, Purpose

LIMITS = ", ".join(f"{purpose.value} {limit // (1024 * 1024)} MiB" for purpose, limit in MAX_BYTES.items())


class UploadRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": 245_000}]},
    )

    purpose: Purpose
    content_type: str = Field(max_length=100, description="One of " + ", ".join(ACCEPTED_TYPES) + " (static GIF only).")
    size_bytes: int = Field(strict=True, description=f"The exact size of the file. At most: {LIMITS}.")
    owner_id: str | None = Field(None, max_length=255, description="The uploader; only the caller themself.")


class UploadTargetOut(BaseModel):
    url: str
    method: Literal["PUT", "POST"]
    headers: dict[str, str] = Field(description="Send these headers with a PUT.")
    fields: dict[str, str] | None = Field(
        description="With POST: a multipart form with these fields first, then the file as `file`."
    )


class UploadOut(BaseModel):
    image_id: str
    upload: UploadTargetOut
    expires_at: datetime = Field(description="Upload and complete before this.")


class ImageOut(BaseModel):
    id: str
    purpose: Purpose
    status: Literal["pending", "ready", "rejected"]
    reason: str | None = Field(description="Why the image was rejected.")
    variants: ImageVariants | None = Field(
        description="WebP variants when ready: thumb (square, ~160 px), medium (~640 px), large (~1600 px)."
    )
    width: int | None
    height: int | None
    created_at: datetime
