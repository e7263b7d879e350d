"""A page of events serialized in one pass (events_page_json: orjson over plain dicts) is byte for byte what the
response model Page[EventSummary] gives for the same page, as FastAPI would serialize it: the fast path may never
drift from the documented shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gatherly.contracts.users import ImageVariants
from gatherly.events.api import _summary
from gatherly.events.domain import EventCard, EventId, Found, GroupId, Location, Venue
from gatherly.events.schemas import EventSummary, events_page_json
from gatherly.kernel.web import Page

# What FastAPI's fast path does with a route's response model: validate what the endpoint returned, dump JSON.
AS_THE_RESPONSE_MODEL = TypeAdapter(Page[EventSummary])

texts = st.text(max_size=30)  # any unicode: accents, emoji, quotes, backslashes, control characters
# Any finite float (the JSON writers must agree on exponents and the shortest digits), any IANA zone too.
coordinates = st.floats(allow_nan=False, allow_infinity=False)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]) | st.timezones()
# Microseconds and offsets included; offsets in whole minutes: of one with seconds (a zone's local mean time before
# 1900) pydantic truncates the seconds and orjson rounds them, but the list's times are UTC (both databases' stores).
times = st.datetimes(timezones=zones).filter(lambda t: t.utcoffset().seconds % 60 == 0)  # type: ignore[union-attr]
venues = st.none() | st.builds(Venue, texts, texts, st.none() | st.builds(Location, coordinates, coordinates))
cards = st.builds(
    EventCard,
    id=st.uuids().map(lambda u: EventId(str(u))),
    group_id=st.uuids().map(lambda u: GroupId(str(u))),
    title=texts,
    starts_at=times,
    ends_at=times,
    timezone=texts,
    venue=venues,
    online=st.booleans(),
    going_count=st.integers(min_value=0, max_value=2**63 - 1),
    capacity=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    cover_image_id=st.none() | texts,
)
found = st.builds(
    Found,
    card=cards,
    group_name=texts,
    distance_km=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    cover=st.none() | st.builds(ImageVariants, thumb=texts, medium=texts, large=texts),
)


def as_the_response_model(page: dict[str, Any]) -> bytes:
    # from_attributes: the response model reads the venue's fields off the domain's Venue (a dataclass), which the
    # fast path hands to orjson as it is.
    return AS_THE_RESPONSE_MODEL.dump_json(AS_THE_RESPONSE_MODEL.validate_python(page, from_attributes=True))


@given(st.lists(found, max_size=4), st.none() | texts)
def test_a_page_of_events_as_json_is_what_the_response_model_gives(listed: list[Found], cursor: str | None) -> None:
    page = {"items": [_summary(f) for f in listed], "next_cursor": cursor}
    assert events_page_json(page) == as_the_response_model(page)  # type: ignore[arg-type]


def test_every_field_of_the_response_model_is_written() -> None:
    starts = datetime(2027, 1, 12, 18, 0, 0, 120, tzinfo=UTC)
    card = EventCard(
        EventId("e1"),
        GroupId("g1"),
        title='Café "Lyon" 🥐 \\ ünïcode',
        starts_at=starts,
        ends_at=starts + timedelta(hours=2),
        timezone="Europe/Paris",
        venue=Venue("Hall", "Rue 1", Location(45.76, 4.84)),
        online=True,
        going_count=3,
        capacity=20,
        cover_image_id="c1",
    )
    cover = ImageVariants(thumb="/t", medium="/m", large="/l")
    page = {"items": [_summary(Found(card, "Lyon Hikers", 1.23456, cover))], "next_cursor": "abc"}
    written = events_page_json(page)  # type: ignore[arg-type]
    assert written == as_the_response_model(page)
    assert list(json.loads(written)["items"][0]) == list(EventSummary.model_fields)
    assert b'"starts_at":"2027-01-12T18:00:00.000120Z"' in written and b'"distance_km":1.235' in written
