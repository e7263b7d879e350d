"""Request and response shapes of the notifications service's HTTP API (the OpenAPI schema is made from these)."""

from __future__ import annotations

from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from typing_extensions import TypedDict

from gatherly.notifications.domain import DEFAULT_REMINDER_HOURS, MAX_REMINDERS, Kind


class NotificationOut(BaseModel):
    id: str
    kind: Kind
    title: str
    body: str
    link: str = Field(description="A path in the web app (e.g. /events/<id>), relative to the public URL.")
    created_at: datetime
    read_at: datetime | None


class InboxOut(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None
    unread_count: int


# The inbox's page, a notification of the stream and the preferences as JSON in one pass: plain dicts serialized by
# orjson give the bytes the response models would (test_inbox_json.py and test_preferences_json.py pin them), without
# models built that the response would then serialize. The routes keep the models as their response models for the
# OpenAPI document. The keys come out in the dicts' order, which api.py writes in the models' (and the tests pin
# these TypedDicts' fields to the models').
class NotificationJson(TypedDict):
    id: str
    kind: Kind
    title: str
    body: str
    link: str
    created_at: datetime
    read_at: datetime | None


class InboxJson(TypedDict):
    items: list[NotificationJson]
    next_cursor: str | None
    unread_count: int


def inbox_json(page: InboxJson) -> bytes:
    """The page as pydantic writes InboxOut: orjson writes the same text, numbers, kinds (a StrEnum: its value) and
    times (a UTC time ending in `Z` with OPT_UTC_Z, as pydantic's does). Not for a time whose offset has seconds
    (pydantic truncates them, orjson rounds): the store gives every time in UTC."""
    return orjson.dumps(page, option=orjson.OPT_UTC_Z)


def notification_json(item: NotificationJson) -> bytes:
    """One notification (the live stream's `data:`) as pydantic writes NotificationOut, as `inbox_json` writes
    the page's."""
    return orjson.dumps(item, option=orjson.OPT_UTC_Z)


class TicketOut(BaseModel):
    ticket: str = Field(description="For `GET /api/notifications/stream?ticket=`: single use, valid for 60 s.")


class RemindersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hours_before: list[StrictInt] = Field(
        default_factory=lambda: list(DEFAULT_REMINDER_HOURS),
        max_length=MAX_REMINDERS,
        description="Hours before each event you go to that a reminder comes (1 to 672).",
    )


class PreferencesBody(BaseModel):
    """Per kind and channel; kinds left out keep their default (email on for all but comment_posted, push on for
    all but weekly_digest)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": {"comment_posted": True},
                    "push": {"event_reminder": False},
                    "reminders": {"hours_before": [24, 2]},
                }
            ]
        },
    )

    email: dict[str, StrictBool] = Field(default_factory=dict, max_length=50)
    push: dict[str, StrictBool] = Field(default_factory=dict, max_length=50)
    reminders: RemindersBody = Field(default_factory=RemindersBody)


class PreferencesOut(BaseModel):
    email: dict[str, bool]
    push: dict[str, bool]
    reminders: RemindersBody


class RemindersJson(TypedDict):
    hours_before: list[int]


class PreferencesJson(TypedDict):
    email: dict[str, bool]
    push: dict[str, bool]
    reminders: RemindersJson


def preferences_json(chosen: PreferencesJson) -> bytes:
    """The preferences as pydantic writes PreferencesOut: the same keys in the dicts' order, booleans and integers
    (hours are 1 to 672: within orjson's 64 bits)."""
    return orjson.dumps(chosen)


# A P-256 public key as browsers send it (the example of RFC 8291's appendix A).
EXAMPLE_P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"


class VapidKeyOut(BaseModel):
    public_key: str = Field(
        description="The VAPID public key (base64url): PushManager.subscribe's applicationServerKey."
    )


class PushKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")

    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)


class PushSubscriptionBody(BaseModel):
    """A browser's PushSubscription (`subscription.toJSON()`); `expirationTime` and unknown fields are ignored."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "endpoint": "https://push.example.org/send/abc123",
                    "keys": {
                        "p256dh": EXAMPLE_P256DH,
                        "auth": "tBHItJI5svbpez7KI4CCXg",
                    },
                }
            ]
        },
    )

    endpoint: str = Field(max_length=2000)
    keys: PushKeys


class PushSubscriptionOut(BaseModel):
    id: str = Field(description="For DELETE /api/push/subscriptions/{id}.")
