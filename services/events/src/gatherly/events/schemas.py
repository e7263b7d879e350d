"""The events service's HTTP request and response shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from gatherly.contracts.users import ImageVariants
from gatherly.events.domain import (
    MAX_ADDRESS,
    MAX_COMMENT,
    MAX_DESCRIPTION,
    MAX_TITLE,
    MAX_URL,
    MAX_VENUE_NAME,
    Answer,
    EventStatus,
    RsvpStatus,
)
from gatherly.kernel.web import Listed, LocationBody


def _not_a_number(value: Any) -> Any:
    """Pydantic reads "-1", "1700000000" or the JSON number 1700000000 as a Unix time (lax mode, in a query and in a
    body alike); the API takes times as RFC 3339 text only."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return value  # anything else is pydantic's to refuse, in its words
    raise PydanticCustomError(
        "datetime_not_a_number", "Give the time as RFC 3339 text with its offset, e.g. 2030-05-01T19:00:00+02:00."
    )


# A time in a query (`from`, `to`): what a datetime parameter takes, less the numbers.
QueryTime = Annotated[datetime, BeforeValidator(_not_a_number)]
# A time in a request body: RFC 3339 text with its offset, never a number.
BodyTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


class VenueBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=MAX_VENUE_NAME)
    address: str = Field("", max_length=MAX_ADDRESS)
    location: LocationBody | None = None


class NewEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "group_id": "9b2f3c1e-8d4a-4f6b-9c2d-1a2b3c4d5e6f",
                    "title": "Tuesday board games",
                    "description": "Bring a game or learn a new one.",
                    "starts_at": "2027-01-12T18:00:00Z",
                    "ends_at": "2027-01-12T21:00:00Z",
                    "timezone": "Europe/Berlin",
                    "venue": {
                        "name": "Café Anker",
                        "address": "Ankerstraße 5, Berlin",
                        "location": {"lat": 52.52, "lng": 13.405},
                    },
                    "capacity": 24,
                    "guest_limit": 1,
                    "recurrence": "FREQ=WEEKLY;BYDAY=TU",
                }
            ]
        },
    )

    group_id: str = Field(max_length=36)
    title: str = Field(max_length=MAX_TITLE)
    description: str = Field("", max_length=MAX_DESCRIPTION)
    starts_at: BodyTime
    ends_at: BodyTime
    timezone: str = Field(description="IANA time zone the event happens in, e.g. Europe/Berlin.", max_length=64)
    venue: VenueBody | None = None
    online_url: str | None = Field(None, max_length=MAX_URL, description="Shown to people going only.")
    capacity: int | None = Field(None, strict=True, description="Seats, guests included; null = unlimited.")
    guest_limit: int = Field(0, strict=True, description="Guests each person may bring.")
    rsvp_opens_at: BodyTime | None = None
    rsvp_closes_at: BodyTime | None = None
    cover_image_id: str | None = Field(None, max_length=64)
    recurrence: str | None = Field(
        None,
        max_length=300,
        description="An RRULE (RFC 5545), e.g. FREQ=WEEKLY;BYDAY=TU: a series of events, expanded in `timezone`.",
    )


class EventChanges(BaseModel):
    """Any of these; a field left out stays as it is. venue, online_url, capacity, rsvp_* and cover_image_id
    may be null."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"capacity": 30, "starts_at": "2027-01-12T18:30:00Z"}]}
    )

    title: str | None = Field(None, max_length=MAX_TITLE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    starts_at: BodyTime | None = None
    ends_at: BodyTime | None = None
    timezone: str | None = Field(None, max_length=64)
    venue: VenueBody | None = None
    online_url: str | None = Field(None, max_length=MAX_URL)
    capacity: int | None = Field(None, strict=True)
    guest_limit: int | None = Field(None, strict=True)
    rsvp_opens_at: BodyTime | None = None
    rsvp_closes_at: BodyTime | None = None
    cover_image_id: str | None = Field(None, max_length=64)


NULLABLE_CHANGES = frozenset({"venue", "online_url", "capacity", "rsvp_opens_at", "rsvp_closes_at", "cover_image_id"})


class GroupRef(BaseModel):
    id: str
    name: str


class MyRsvpOut(BaseModel):
    status: RsvpStatus
    guests: int
    waitlist_position: int | None = Field(None, description="On the waitlist: 1 = the next to get a seat.")


class EventOut(BaseModel):
    id: str
    group: GroupRef
    title: str
    description: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    venue: VenueBody | None
    online: bool
    online_url: str | None = Field(description="Shown to people going only.")
    capacity: int | None
    guest_limit: int
    rsvp_opens_at: datetime | None
    rsvp_closes_at: datetime | None
    cover_image_id: str | None
    cover: ImageVariants | None = Field(
        description="The cover's variants: shown while the image is ready and its uploader leads the group."
    )
    going_count: int = Field(description="Seats taken, guests included.")
    waitlist_count: int = Field(description="Parties waiting for a seat.")
    attendance: int = Field(description="People checked in by the leaders.")
    status: EventStatus
    my_rsvp: MyRsvpOut | None
    series_id: str | None = Field(description="The recurring series this event is an occurrence of.")
    created_by: str
    created_at: datetime
    updated_at: datetime


class RsvpBody(BaseModel):
    # Like every request body: a field it does not have (a misspelt "guest") is refused, not silently dropped.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"response": "yes", "guests": 1}]})

    response: Answer
    guests: int = Field(0, ge=0, strict=True)


class AttendeeOut(BaseModel):
    user_id: str
    display_name: str | None = Field(description="null until the person's profile reached this service, or deleted")
    avatar: ImageVariants | None
    guests: int
    status: Literal["going", "waitlisted"]
    waitlist_position: int | None


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"body": "I can bring Catan."}]})

    body: str = Field(max_length=MAX_COMMENT)


class CommentOut(BaseModel):
    id: str
    author_id: str | None = Field(
        description="null when the author deleted their account: the comment stays, shown as by a deleted member"
    )
    body: str
    created_at: datetime
    updated_at: datetime


class CheckInOut(BaseModel):
    user_id: str
    checked_in_at: datetime
    attendance: int = Field(description="People checked in to this event so far.")


class FeedOut(BaseModel):
    url: str = Field(description="Secret: whoever has it sees what you are going to. DELETE revokes it.")


class EventSummary(BaseModel):
    id: str
    group: GroupRef
    title: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    venue: VenueBody | None
    online: bool
    going_count: int
    capacity: int | None
    distance_km: float | None = Field(None, description="Only in searches with `near`: how far the venue is.")
    cover: ImageVariants | None = Field(
        None, description="The cover's variants: shown while the image is ready and its uploader leads the group."
    )


# A page of events as JSON in one pass: plain dicts serialized by orjson give the bytes Page[EventSummary] would
# (test_list_json.py pins it), without building eighty models a page (an event, its group, venue and location)
# that FastAPI would then validate again. The route keeps its response model for the OpenAPI document. The keys come
# out in the dicts' order, which the store's list view (store._listed) writes in EventSummary's.
class EventsPageJson(TypedDict):
    items: Sequence[Listed]  # EventSummary's fields, as store._listed makes them
    next_cursor: str | None


def events_page_json(page: EventsPageJson) -> bytes:
    """The page as pydantic writes it: orjson writes the same text, numbers and times (a UTC time ending in `Z` with
    OPT_UTC_Z, as pydantic's does) in about half the time of a TypeAdapter over TypedDicts of EventSummary's shape.
    Not for a time whose offset has seconds (pydantic truncates them, orjson rounds): the stores give every time in
    UTC."""
    return orjson.dumps(page, option=orjson.OPT_UTC_Z)


class ImportedOut(BaseModel):
    uid: str
    event_id: str | None
    reason: str | None = None


class ImportReport(BaseModel):
    created: list[ImportedOut]
    updated: list[ImportedOut]
    skipped: list[ImportedOut] = Field(description="With the reason: unreadable, unsupported, unchanged, repeated.")
