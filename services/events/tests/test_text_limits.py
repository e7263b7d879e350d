"""Every text field of the events API has a length limit and refuses hostile text with a 422 naming the field:
NUL and lone surrogates (the kernel's text policy), control characters, bidirectional overrides and invisible-only
names (the events domain)."""

from __future__ import annotations

import json
from typing import Any

import pytest

EventsApi = Any  # the `api` fixture of conftest.py

pytestmark = pytest.mark.asyncio(loop_scope="module")

LONG = {
    "title": 200,
    "description": 10_000,
    "venue.name": 200,
    "venue.address": 500,
}


def _with(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    if field.startswith("venue."):
        return {**body, "venue": {**body["venue"], field.split(".")[1]: value}}
    return {**body, field: value}


async def _leader_group(api: EventsApi) -> tuple[Any, str]:
    olga = await api.person("Limits Olga")
    if not hasattr(api, "_limits_group"):
        api._limits_group = await api.group(olga)
    return olga, api._limits_group


async def _post(api: EventsApi, url: str, body: dict[str, Any], auth: dict[str, str]) -> Any:
    """As a client would send it: JSON escapes (\\ud800) carry even a lone surrogate."""
    headers = {**auth, "content-type": "application/json"}
    return await api.client.post(url, content=json.dumps(body), headers=headers)


def _field_of(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["errors"][0]["field"])


@pytest.mark.parametrize("field", list(LONG))
async def test_each_text_field_takes_its_limit_and_refuses_one_more_character(api: EventsApi, field: str) -> None:
    olga, group_id = await _leader_group(api)
    limit = LONG[field]
    body = api.event_body(group_id)
    fits = await api.client.post("/api/events", json=_with(body, field, "a" * limit), headers=olga.auth)
    assert fits.status_code == 201, fits.text
    too_long = await api.client.post("/api/events", json=_with(body, field, "a" * (limit + 1)), headers=olga.auth)
    assert _field_of(too_long).endswith(field.split(".")[-1])
    # The same limit on an edit.
    patch = {"venue": _with(body, field, "a" * (limit + 1))["venue"]} if "." in field else {field: "a" * (limit + 1)}
    edited = await api.client.patch(f"/api/events/{fits.json()['id']}", json=patch, headers=olga.auth)
    assert _field_of(edited).endswith(field.split(".")[-1])


async def test_an_online_url_comment_and_rule_have_limits(api: EventsApi) -> None:
    olga, group_id = await _leader_group(api)
    long_url = "https://example.org/" + "a" * 2000
    body = api.event_body(group_id, online_url=long_url)
    response = await api.client.post("/api/events", json=body, headers=olga.auth)
    assert _field_of(response).endswith("online_url")
    rule = "FREQ=WEEKLY;" + "BYDAY=MO;" * 40
    response = await api.client.post("/api/events", json=api.event_body(group_id, recurrence=rule), headers=olga.auth)
    assert _field_of(response).endswith("recurrence")
    event = await api.schedule(olga, group_id)
    comments = f"/api/events/{event['id']}/comments"
    assert (await api.client.post(comments, json={"body": "a" * 5000}, headers=olga.auth)).status_code == 201
    response = await api.client.post(comments, json={"body": "a" * 5001}, headers=olga.auth)
    assert _field_of(response).endswith("body")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Run\x00ning"),  # NUL: PostgreSQL cannot store it
        ("description", "lone \ud800 surrogate"),  # SQLite's encoder cannot store it
        ("title", "Evil \u202egnp.exe"),  # a right-to-left override makes the title read otherwise
        ("venue.name", "Caf\u2066e\u2069"),  # bidi isolates in a name
        ("title", "\x1b[31mred\x1b[0m"),  # a terminal escape
        ("description", "bell \x07 here"),
        ("venue.address", "del\x7fete"),
        ("title", "\u200b\u200b"),  # nothing visible
        ("online_url", "http://[::1"),  # not a URL the parser can take
        ("online_url", "javascript:alert(1)"),
        ("online_url", "https://exa mple.org"),
    ],
)
async def test_hostile_text_is_refused_naming_the_field(api: EventsApi, field: str, value: str) -> None:
    olga, group_id = await _leader_group(api)
    body = _with(api.event_body(group_id), field, value)
    response = await _post(api, "/api/events", body, olga.auth)
    assert _field_of(response).endswith(field.split(".")[-1])


async def test_hostile_comments_are_refused_and_whitespace_in_titles_is_one_space(api: EventsApi) -> None:
    olga, group_id = await _leader_group(api)
    event = await api.schedule(olga, group_id, title="  Evening\n\trun  ", description="line one\r\nline two")
    assert (event["title"], event["description"]) == ("Evening run", "line one\nline two")
    comments = f"/api/events/{event['id']}/comments"
    for body in ("a\x00b", "\udfff", "\x1b]0;title\x07"):
        response = await _post(api, comments, {"body": body}, olga.auth)
        assert _field_of(response) == "body"
    # Right-to-left text itself (Arabic, Hebrew) and the joiners emoji need are welcome.
    for body in ("مرحبا بالجميع", "שלום", "👩\u200d💻 see you"):
        response = await api.client.post(comments, json={"body": body}, headers=olga.auth)
        assert (response.status_code, response.json()["body"]) == (201, body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capacity", True),  # JSON true is not the number 1
        ("capacity", "5"),
        ("capacity", 5.0),
        ("guest_limit", False),
        ("venue.location", {"lat": "52.5", "lng": 13.4}),
        ("venue.location", {"lat": True, "lng": 13.4}),
    ],
)
async def test_numbers_of_the_wrong_json_type_are_refused(api: EventsApi, field: str, value: Any) -> None:
    olga, group_id = await _leader_group(api)
    response = await _post(api, "/api/events", _with(api.event_body(group_id), field, value), olga.auth)
    assert field.split(".")[-1] in _field_of(response)


async def test_rsvp_guests_of_the_wrong_json_type_are_refused(api: EventsApi) -> None:
    olga, group_id = await _leader_group(api)
    event = await api.schedule(olga, group_id, guest_limit=2)
    for guests in ("1", True, 1.0):
        response = await api.client.put(
            f"/api/events/{event['id']}/rsvp", json={"response": "yes", "guests": guests}, headers=olga.auth
        )
        assert "guests" in _field_of(response)
    assert (await api.get(event["id"], olga))["my_rsvp"] is None
