"""The events service's integration events: the catalog it promises (types, topics, keys), and schemas that a
consumer built later can still read (unknown fields ignored)."""

from __future__ import annotations

from datetime import UTC, datetime

from gatherly.contracts import all_schemas
from gatherly.contracts.events import EventCancelled, RsvpWaitlisted

CATALOG = {
    "event.scheduled": "event",
    "event.updated": "event",
    "event.cancelled": "event",
    "event.checked_in": "event",
    "rsvp.confirmed": "rsvp",
    "rsvp.waitlisted": "rsvp",
    "rsvp.promoted": "rsvp",
    "rsvp.cancelled": "rsvp",
    "comment.posted": "comment",
}


def test_every_event_of_the_catalog_has_a_schema_on_its_topic_keyed_by_event_id() -> None:
    schemas = {event_type: schema for (event_type, _), schema in all_schemas().items()}
    for event_type, topic in CATALOG.items():
        schema = schemas[event_type]
        assert topic == schema.TOPIC, event_type
        assert schema.AGGREGATE_ID == "event_id", event_type
        assert "event_id" in schema.model_fields and "group_id" in schema.model_fields


def test_a_newer_publisher_s_extra_fields_are_ignored() -> None:
    now = datetime.now(UTC).isoformat()
    waitlisted = RsvpWaitlisted.model_validate(
        {"event_id": "e", "group_id": "g", "user_id": "u", "guests": 1, "position": 3, "responded_at": now, "new": 1}
    )
    assert (waitlisted.aggregate_id, waitlisted.position) == ("e", 3)
    cancelled = EventCancelled.model_validate(
        {
            "event_id": "e",
            "group_id": "g",
            "group_name": "G",
            "title": "T",
            "starts_at": now,
            "reason": "group_deleted",
            "cancelled_by": "o",
            "attendee_ids": ["a"],
            "waitlist_ids": [],
            "sequence": 2,
            "cancelled_at": now,
            "venue_changed": True,
        }
    )
    assert cancelled.attendee_ids == ["a"]
