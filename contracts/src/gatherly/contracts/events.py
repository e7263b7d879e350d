"""Events of the events service: topics `event`, `rsvp` and `comment`, all keyed by event id so everything that
happens to one event (its details, its attendance, its comments) keeps its order per topic. The events service's
reply in the group-deletion saga is `GroupEventsCancelled` in contracts/groups.py (the saga is the groups service's)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from gatherly.contracts.base import IntegrationEvent
from gatherly.contracts.users import GeoPoint


class Venue(BaseModel):
    name: str
    address: str = ""
    location: GeoPoint | None = None


# --- topic `event` ------------------------------------------------------------------------------------------------


class EventEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "event"
    AGGREGATE_ID: ClassVar[str] = "event_id"

    event_id: str
    group_id: str


class EventSnapshot(EventEvent):
    """What an event is now, so a read model (the notifications service's event times) upserts from one message.
    `sequence` grows with every change (it is the calendar files' SEQUENCE). `online_url` is left out on purpose:
    it is shown to people going only, and the topic is read by every service."""

    group_name: str
    title: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    venue: Venue | None = None
    online: bool = False
    capacity: int | None = None
    sequence: int


class EventScheduled(EventSnapshot):
    """A leader of the group scheduled an event (the group's members may be told: `event_scheduled`)."""

    TYPE: ClassVar[str] = "event.scheduled"

    scheduled_by: str
    scheduled_at: datetime


class EventUpdated(EventSnapshot):
    """A leader changed an event. `changed` names the fields that changed (`starts_at`, `venue`, `capacity`, …);
    `attendee_ids` are the people going, told when the time or place changed."""

    TYPE: ClassVar[str] = "event.updated"

    changed: list[str]
    attendee_ids: list[str] = []
    updated_by: str
    updated_at: datetime


class EventCancelled(EventEvent):
    """An event was cancelled, by a leader (`cancelled_by`) or because its group was deleted (`reason`
    "group_deleted", `cancelled_by` the organizer who deleted it). The people going and waiting are named so they
    can be told; no rsvp.cancelled follows for them."""

    TYPE: ClassVar[str] = "event.cancelled"

    group_name: str
    title: str
    starts_at: datetime
    reason: str
    cancelled_by: str
    attendee_ids: list[str]
    waitlist_ids: list[str]
    sequence: int
    cancelled_at: datetime


class EventCheckedIn(EventEvent):
    """A leader marked a going attendee as present; `attendance` is how many are checked in now."""

    TYPE: ClassVar[str] = "event.checked_in"

    user_id: str
    checked_in_by: str
    attendance: int
    checked_in_at: datetime


# --- topic `rsvp` (key: event id, so one event's attendance changes keep their order) -------------------------------


class RsvpEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "rsvp"
    AGGREGATE_ID: ClassVar[str] = "event_id"

    event_id: str
    group_id: str
    user_id: str
    guests: int


class RsvpConfirmed(RsvpEvent):
    """Someone answered yes and has a seat (for themselves and `guests`)."""

    TYPE: ClassVar[str] = "rsvp.confirmed"

    responded_at: datetime


class RsvpWaitlisted(RsvpEvent):
    """Someone answered yes to a full event and waits at `position` (1 = next to get a seat)."""

    TYPE: ClassVar[str] = "rsvp.waitlisted"

    position: int
    responded_at: datetime


class RsvpPromoted(RsvpEvent):
    """A seat freed up and the head of the waitlist got it, without asking again."""

    TYPE: ClassVar[str] = "rsvp.promoted"

    promoted_at: datetime


class RsvpCancelled(RsvpEvent):
    """Someone going or waiting no longer is. `reason`: declined (answered no) | left_group | removed | banned |
    account_deleted (the person deleted their account)."""

    TYPE: ClassVar[str] = "rsvp.cancelled"

    previous_status: str
    reason: str
    cancelled_at: datetime


# --- topic `comment` (key: event id) -------------------------------------------------------------------------------


class CommentPosted(IntegrationEvent):
    TOPIC: ClassVar[str] = "comment"
    AGGREGATE_ID: ClassVar[str] = "event_id"
    TYPE: ClassVar[str] = "comment.posted"

    event_id: str
    group_id: str
    comment_id: str
    author_id: str
    body: str
    posted_at: datetime
