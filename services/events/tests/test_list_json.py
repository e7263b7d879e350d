"""A page of events serialized in one pass (events_page_json: orjson over plain dicts) is byte for byte what the
response model Page[EventSummary] gives for the same page, as FastAPI would serialize it; and a list's events, made
straight from their rows' values (store._listed) with the covers the service shows (service._show_covers), are what
the event's own page (api._event_out, GET /api/events/{id}) shows of the same row: the fast path may never drift from
the documented shape nor from the event's page."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gatherly.contracts.users import ImageVariants
from gatherly.events.api import _event_out
from gatherly.events.domain import EventStatus, GroupId, GroupSummary, Visibility
from gatherly.events.schemas import EventSummary, events_page_json
from gatherly.events.service import EventView, _show_covers
from gatherly.events.store import LISTED_KEYS, _event, _listed
from gatherly.kernel.web import Page

# What FastAPI's fast path does with a route's response model: validate what the endpoint returned, dump JSON.
AS_THE_RESPONSE_MODEL = TypeAdapter(Page[EventSummary])
SUMMARY_FIELDS = set(EventSummary.model_fields)

texts = st.text(max_size=30)  # any unicode: accents, emoji, quotes, backslashes, control characters
# Any finite float (the JSON writers must agree on exponents and the shortest digits), any IANA zone too.
coordinates = st.floats(allow_nan=False, allow_infinity=False)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]) | st.timezones()
# Microseconds and offsets included; offsets in whole minutes: of one with seconds (a zone's local mean time before
# 1900) pydantic truncates the seconds and orjson rounds them, but the list's times are UTC (both databases' stores).
times = st.datetimes(timezones=zones).filter(lambda t: t.utcoffset().seconds % 60 == 0)  # type: ignore[union-attr]
counts = st.integers(min_value=0, max_value=2**63 - 1)
covers = st.none() | st.builds(ImageVariants, thumb=texts, medium=texts, large=texts)
distances = st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False)

# An event's row as the store reads it, converted (FixedRead: times aware datetimes): the list's columns and those
# only the event's page reads. A venue's name, address, lat and lng each may be missing.
stored_rows = st.fixed_dictionaries(
    {
        "id": st.uuids().map(str),
        "group_id": st.uuids().map(str),
        "title": texts,
        "description": texts,
        "starts_at": times,
        "ends_at": times,
        "timezone": texts,
        "venue_name": st.none() | texts,
        "venue_address": st.none() | texts,
        "lat": st.none() | coordinates,
        "lng": st.none() | coordinates,
        "online_url": st.none() | texts,
        "capacity": st.none() | st.integers(min_value=1, max_value=2**63 - 1),
        "guest_limit": st.integers(min_value=0, max_value=10),
        "rsvp_opens_at": st.none() | times,
        "rsvp_closes_at": st.none() | times,
        "cover_image_id": st.none() | texts,
        "status": st.sampled_from([status.value for status in EventStatus]),
        "sequence": st.integers(min_value=0, max_value=10),
        "going_count": counts,
        "waitlist_count": counts,
        "queue_counter": counts,
        "anonymous_check_ins": st.integers(min_value=0, max_value=10),
        "created_by": st.uuids().map(str),
        "created_at": times,
        "updated_at": times,
        "cancelled_at": st.none() | times,
        "series_id": st.none() | st.uuids().map(str),
        "occurrence_date": st.none() | st.dates(min_value=date(2000, 1, 1)).map(date.isoformat),
        "source_uid": st.none() | texts,
    }
)


def as_the_response_model(page: dict[str, Any]) -> bytes:
    return AS_THE_RESPONSE_MODEL.dump_json(AS_THE_RESPONSE_MODEL.validate_python(page))


def as_its_own_page_shows_it(row: dict[str, Any], group_name: str, cover: ImageVariants | None) -> dict[str, Any]:
    """EventSummary's fields as GET /api/events/{id} writes them of the row (distance_km aside)."""
    group = GroupSummary(GroupId(row["group_id"]), group_name, Visibility.PUBLIC)
    shown = _event_out(EventView(_event(row), group, None, cover=cover)).model_dump(include=SUMMARY_FIELDS)
    return {field: shown.get(field) for field in EventSummary.model_fields}


@given(
    st.lists(st.tuples(stored_rows, texts, distances, covers), max_size=4, unique_by=lambda event: event[0]["id"]),
    st.none() | texts,
)
def test_a_listed_event_is_what_its_own_page_shows_through_the_response_model(
    events: list[tuple[dict[str, Any], str, float | None, ImageVariants | None]], cursor: str | None
) -> None:
    # The list's rows: LISTED_COLUMNS' values in their order, then the group's name, as FixedRead.values gives them.
    listed = [_listed([*(row[key] for key in LISTED_KEYS), name], name, distance) for row, name, distance, _ in events]
    # Each named cover shown (its uploader a leader: which show is the service's rule, test_covers.py); an image id a
    # row, so a group's events each show their own.
    named = [
        (event, row["group_id"], row["id"]) for event, (row, *_, cover) in zip(listed, events, strict=True) if cover
    ]
    _show_covers(named, {(row["group_id"], row["id"]): ("organizer", cover) for row, *_, cover in events if cover})
    fast = events_page_json({"items": listed, "next_cursor": cursor})
    reference = [
        {
            **as_its_own_page_shows_it(row, name, cover),
            "distance_km": round(distance, 3) if distance is not None else None,
        }
        for row, name, distance, cover in events
    ]
    assert fast == as_the_response_model({"items": reference, "next_cursor": cursor})


def test_every_field_of_the_response_model_is_written() -> None:
    starts = datetime(2027, 1, 12, 18, 0, 0, 120, tzinfo=UTC)
    columns = {
        "id": "e1",
        "group_id": "g1",
        "title": 'Café "Lyon" 🥐 \\ ünïcode',
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=2),
        "timezone": "Europe/Paris",
        "venue_name": "Hall",
        "venue_address": "Rue 1",
        "lat": 45.76,
        "lng": 4.84,
        "online_url": "https://example.com/meet",
        "going_count": 3,
        "capacity": 20,
        "cover_image_id": "c1",
    }
    [event] = listed = [_listed([columns[key] for key in LISTED_KEYS], "Lyon Hikers", 1.23456)]
    _show_covers(
        [(event, GroupId("g1"), "c1")],
        {("g1", "c1"): ("organizer", ImageVariants(thumb="/t", medium="/m", large="/l"))},
    )
    written = events_page_json({"items": listed, "next_cursor": "abc"})
    assert written == as_the_response_model({"items": listed, "next_cursor": "abc"})
    assert list(json.loads(written)["items"][0]) == list(EventSummary.model_fields)
    assert b'"starts_at":"2027-01-12T18:00:00.000120Z"' in written and b'"distance_km":1.235' in written
    assert b'"venue":{"name":"Hall","address":"Rue 1","location":{"lat":45.76,"lng":4.84}}' in written
    assert b'"cover":{"thumb":"/t","medium":"/m","large":"/l"}' in written and b'"online":true' in written


@given(st.floats(allow_nan=False, allow_infinity=False), st.text())
def test_orjson_writes_any_float_and_text_as_pydantic_does(number: float, words: str) -> None:
    # What events_page_json relies on for every float and text of a page (exponents, subnormals, -0.0; escapes).
    assert orjson.dumps([number, words]) == TypeAdapter(list[float | str]).dump_json([number, words])
