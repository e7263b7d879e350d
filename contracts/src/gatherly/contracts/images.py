"""Events of the images service (topic `image`): other services keep read models of ready images."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from gatherly.contracts.base import IntegrationEvent
from gatherly.contracts.users import ImageVariants


class ImageEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "image"
    AGGREGATE_ID: ClassVar[str] = "image_id"

    image_id: str


class ImageReady(ImageEvent):
    """An upload passed validation and its variants exist. `purpose` is avatar | group_banner | event_cover |
    event_photo; `owner_id` is the user who uploaded it (and may use it)."""

    TYPE: ClassVar[str] = "image.ready"

    owner_id: str
    purpose: str
    variants: ImageVariants
    ready_at: datetime


class ImageRejected(ImageEvent):
    TYPE: ClassVar[str] = "image.rejected"

    owner_id: str
    purpose: str
    reason: str


class ImageDeleted(ImageEvent):
    TYPE: ClassVar[str] = "image.deleted"

    owner_id: str
