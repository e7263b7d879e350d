"""A page of groups serialized in one pass (groups_page_json: orjson over plain dicts) is byte for byte what the
response model GroupsPage gives for the same page, as FastAPI would serialize it: the fast path may never drift from
the documented shape. And a list's groups, made straight from their rows' values (store._listed), are what the
group's own card (`Group.card()`, the group's page) gives through `api._summary` and the response model."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gatherly.contracts.users import ImageVariants
from gatherly.groups.api import _summary
from gatherly.groups.domain import GroupCard, GroupId, JoinPolicy, Location, Visibility
from gatherly.groups.schemas import GroupsPage, GroupSummary, groups_page_json
from gatherly.groups.store import LISTED_KEYS, _banners_shown, _group, _listed

# What FastAPI's fast path does with a route's response model: validate what the endpoint returned, dump JSON.
AS_THE_RESPONSE_MODEL = TypeAdapter(GroupsPage)

texts = st.text(max_size=30)  # any unicode: accents, emoji, quotes, backslashes, control characters
coordinates = st.floats(min_value=-180, max_value=180, allow_nan=False)
cards = st.builds(
    GroupCard,
    id=st.uuids().map(lambda u: GroupId(str(u))),
    slug=texts,
    name=texts,
    topics=st.lists(texts, max_size=4).map(tuple),
    city=st.none() | texts,
    location=st.none() | st.builds(Location, coordinates, coordinates),
    visibility=st.sampled_from(Visibility),
    join_policy=st.sampled_from(JoinPolicy),
    banner_image_id=st.none() | texts,
    member_count=st.integers(min_value=0, max_value=2**40),
)
banners = st.none() | st.builds(ImageVariants, thumb=texts, medium=texts, large=texts)
distances = st.none() | st.floats(min_value=0, max_value=20_000, allow_nan=False)
listed = st.lists(st.tuples(cards, banners, distances), max_size=5)


def as_the_response_model(page: dict[str, Any]) -> bytes:
    return AS_THE_RESPONSE_MODEL.dump_json(AS_THE_RESPONSE_MODEL.validate_python(page))


@given(listed, st.none() | texts, st.none() | st.integers(min_value=0, max_value=10**6))
def test_a_page_of_groups_as_json_is_what_the_response_model_gives(
    groups: list[tuple[GroupCard, ImageVariants | None, float | None]], cursor: str | None, total: int | None
) -> None:
    items = [_summary(*group) for group in groups]
    page = {"items": items, "next_cursor": cursor, "total": total}
    assert groups_page_json(items, cursor, total) == as_the_response_model(page)


def test_every_field_of_the_response_model_is_written() -> None:
    card = GroupCard(
        id=GroupId("0b8e8c1e-2f9a-4f7e-9a52-1f0c6f0d6a11"),
        slug="cafe-lyon",
        name='Café "Lyon" 🥐 \\ ünïcode',
        topics=("tech", "café"),
        city=None,
        location=Location(45.76, 4.84),
        visibility=Visibility.PUBLIC,
        join_policy=JoinPolicy.APPROVAL,
        banner_image_id="img",
        member_count=3,
    )
    banner = ImageVariants(thumb="/t", medium="/m", large="/l")
    items = [_summary(card, banner, 1.23456)]
    page = {"items": items, "next_cursor": "abc", "total": None}
    written = groups_page_json(items, "abc", None)
    assert written == as_the_response_model(page)
    assert list(json.loads(written)["items"][0]) == list(GroupSummary.model_fields)
    assert b'"distance_km":1.235' in written and b'"visibility":"public"' in written


@given(st.floats(allow_nan=False, allow_infinity=False), st.text())
def test_orjson_writes_any_float_and_text_as_pydantic_does(number: float, words: str) -> None:
    # What groups_page_json relies on for every float and text of a page (exponents, subnormals, -0.0; escapes).
    assert orjson.dumps([number, words]) == TypeAdapter(list[float | str]).dump_json([number, words])


# A group's row as the list's statement gives it, converted (FixedRead: topics a list, times aware datetimes), and
# the columns only the group's page reads; lat and lng each may be missing.
stored_rows = st.fixed_dictionaries(
    {
        "id": st.uuids().map(str),
        "slug": texts,
        "name": texts,
        "name_key": texts,
        "description": texts,
        "topics": st.lists(texts, max_size=4),
        "city": st.none() | texts,
        "lat": st.none() | coordinates,
        "lng": st.none() | coordinates,
        "visibility": st.sampled_from([member.value for member in Visibility]),
        "join_policy": st.sampled_from([member.value for member in JoinPolicy]),
        "questions": st.lists(texts, max_size=2),
        "banner_image_id": st.none() | texts,
        "member_count": st.integers(min_value=0, max_value=2**40),
        "created_at": st.datetimes(timezones=st.just(UTC)),
        "updated_at": st.datetimes(timezones=st.just(UTC)),
        "deleted_at": st.none(),
    }
)


@given(
    st.lists(st.tuples(stored_rows, banners, distances), max_size=5, unique_by=lambda group: group[0]["id"]),
    st.none() | texts,
    st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_a_listed_group_is_what_its_own_card_gives_through_the_response_model(
    groups: list[tuple[dict[str, Any], ImageVariants | None, float | None]], cursor: str | None, total: int | None
) -> None:
    # The list's rows: LISTED_COLUMNS' values in their order (SHOWN_COLUMNS first), then a column of the statement's
    # own (a total, a distance, a rank), as FixedRead.values gives them.
    listed = [_listed([*(row[key] for key in LISTED_KEYS), 7.5], distance) for row, _, distance in groups]
    shown = {GroupId(row["id"]): banner for row, banner, _ in groups if banner is not None}
    fast = groups_page_json(_banners_shown(listed, shown), cursor, total)
    cards = [_summary(_group(row).card(), banner, distance) for row, banner, distance in groups]
    assert fast == as_the_response_model({"items": cards, "next_cursor": cursor, "total": total})
