"""Events of the users service (topic `user`)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from gatherly.contracts.base import IntegrationEvent


class GeoPoint(BaseModel):
    lat: float
    lng: float


class ImageVariants(BaseModel):
    """Public URLs of an image's variants, as the images service reports them."""

    thumb: str
    medium: str
    large: str


class UserEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "user"
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str


class UserRegistered(UserEvent):
    """An account was created (not yet confirmed)."""

    TYPE: ClassVar[str] = "user.registered"

    email: str
    display_name: str
    registered_at: datetime


class UserConfirmed(UserEvent):
    """The person proved they own the email address; the account can log in."""

    TYPE: ClassVar[str] = "user.confirmed"

    email: str
    display_name: str
    confirmed_at: datetime


class UserProfileUpdated(UserEvent):
    """What other services show of a person. Carries the whole public profile (plus email for notifications),
    so a consumer can upsert its read model from this one message."""

    TYPE: ClassVar[str] = "user.profile_updated"

    email: str
    display_name: str
    bio: str = ""
    city: str | None = None
    location: GeoPoint | None = None
    topics: list[str] = []
    avatar: ImageVariants | None = None
    updated_at: datetime


class UserDeleted(UserEvent):
    """The account is gone; other services forget or anonymise the person."""

    TYPE: ClassVar[str] = "user.deleted"

    deleted_at: datetime
