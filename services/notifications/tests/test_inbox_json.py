"""The inbox's page serialized in one pass (inbox_json: orjson over plain dicts) is byte for byte what the response
model InboxOut gives for the same page, as FastAPI would serialize it, and a notification of the live stream
(notification_json, from the same `_item`) what NotificationOut's `model_dump_json` gave: the fast path may never drift
from the documented shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gatherly.notifications.api import _item
from gatherly.notifications.domain import Kind, UserId
from gatherly.notifications.schemas import InboxOut, NotificationOut, inbox_json, notification_json
from gatherly.notifications.store import Notification

# What FastAPI's fast path does with a route's response model: validate what the endpoint returned, dump JSON.
AS_THE_RESPONSE_MODEL = TypeAdapter(InboxOut)

texts = st.text(max_size=30)  # any unicode: accents, emoji, quotes, backslashes, control characters
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]) | st.timezones()
# Microseconds and offsets included; offsets in whole minutes: of one with seconds (a zone's local mean time before
# 1900) pydantic truncates the seconds and orjson rounds them, but the inbox's times are UTC (both databases' stores).
times = st.datetimes(timezones=zones).filter(lambda t: t.utcoffset().seconds % 60 == 0)  # type: ignore[union-attr]
notifications = st.builds(
    Notification,
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    id=st.uuids().map(str) | texts,
    user_id=st.uuids().map(lambda u: UserId(str(u))),
    kind=st.sampled_from(Kind),
    title=texts,
    body=texts,
    link=texts,
    created_at=times,
    read_at=st.none() | times,
)


def as_the_model(n: Notification) -> NotificationOut:
    """A notification as the page and the stream made it before (api._out)."""
    return NotificationOut(
        id=n.id,
        kind=n.kind,
        title=n.title,
        body=n.body,
        link=n.link,
        created_at=n.created_at,
        read_at=n.read_at,
    )


def as_the_response_model(items: list[Notification], cursor: str | None, unread: int) -> bytes:
    """The page as the route made it before: InboxOut of NotificationOuts, validated and dumped as FastAPI does."""
    page = InboxOut(items=[as_the_model(n) for n in items], next_cursor=cursor, unread_count=unread)
    return AS_THE_RESPONSE_MODEL.dump_json(AS_THE_RESPONSE_MODEL.validate_python(page))


def fast(items: list[Notification], cursor: str | None, unread: int) -> bytes:
    return inbox_json({"items": [_item(n) for n in items], "next_cursor": cursor, "unread_count": unread})


@given(st.lists(notifications, max_size=4), st.none() | texts, st.integers(min_value=0, max_value=2**63 - 1))
def test_a_page_of_the_inbox_as_json_is_what_the_response_model_gives(
    items: list[Notification], cursor: str | None, unread: int
) -> None:
    assert fast(items, cursor, unread) == as_the_response_model(items, cursor, unread)


@given(notifications)
def test_a_notification_of_the_stream_as_json_is_what_the_model_wrote(notification: Notification) -> None:
    assert notification_json(_item(notification)) == as_the_model(notification).model_dump_json().encode()


def test_every_field_of_the_response_model_is_written() -> None:
    created = datetime(2027, 1, 12, 18, 0, 0, 120, tzinfo=UTC)
    title = 'Café "Lyon" 🥐 \\ ünïcode'
    read = Notification(7, "n1", UserId("u1"), Kind.COMMENT_POSTED, title, "Body\n", "/events/e1", created, created)
    unread = read._replace(
        seq=8, id="n2", kind=Kind.EVENT_REMINDER, created_at=created.replace(microsecond=0), read_at=None
    )
    written = fast([unread, read], "abc", 2**63 - 1)
    assert written == as_the_response_model([unread, read], "abc", 2**63 - 1)
    page: dict[str, Any] = json.loads(written)
    assert list(page) == list(InboxOut.model_fields)
    assert list(page["items"][0]) == list(NotificationOut.model_fields)
    assert b'"created_at":"2027-01-12T18:00:00.000120Z"' in written and b'"kind":"comment_posted"' in written
    assert b'"created_at":"2027-01-12T18:00:00Z","read_at":null' in written
