"""POST /api/events/import through HTTP: a calendar file from another platform becomes a group's events (leaders
only), a re-import updates by UID instead of duplicating, the report says what was created, updated and skipped
and why, and hostile files get 4xx."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gatherly.app.testing import Person

EventsApi = Any  # the `api` fixture of conftest.py (test modules do not import conftest)

pytestmark = pytest.mark.asyncio(loop_scope="module")

NEXT_YEAR = datetime.now(UTC).year + 1


def vevent(uid: str | None, *lines: str) -> str:
    head = [f"UID:{uid}"] if uid is not None else []
    return "\r\n".join(["BEGIN:VEVENT", *head, "DTSTAMP:20240101T000000Z", *lines, "END:VEVENT"])


def ics(*events: str) -> bytes:
    return "\r\n".join(
        ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Other//Platform//EN", *events, "END:VCALENDAR", ""]
    ).encode()


def meetup(uid: str, title: str = "Board games", *, year: int = NEXT_YEAR, extra: tuple[str, ...] = ()) -> str:
    return vevent(
        uid,
        f"SUMMARY:{title}",
        f"DTSTART;TZID=Europe/Berlin:{year}0715T190000",
        f"DTEND;TZID=Europe/Berlin:{year}0715T220000",
        "LOCATION:Cafe Central\\, Berlin",
        "GEO:52.52;13.405",
        "DESCRIPTION:Bring a game.",
        *extra,
    )


async def _import(api: EventsApi, person: Person | None, group_id: str, body: bytes, **headers: str) -> Any:
    return await api.client.post(
        "/api/events/import",
        params={"group_id": group_id},
        content=body,
        headers={"content-type": "text/calendar", **(person.auth if person else {}), **headers},
    )


async def test_a_leader_imports_past_and_future_events_and_a_reimport_updates_by_uid(api: EventsApi) -> None:
    leader = await api.person("Import Leader")
    group_id = await api.group(leader)
    first = ics(meetup("a@other"), meetup("b@other", "Last year's picnic", year=NEXT_YEAR - 2))

    response = await _import(api, leader, group_id, first)

    assert response.status_code == 200, response.text
    report = response.json()
    assert [c["uid"] for c in report["created"]] == ["a@other", "b@other"]
    assert (report["updated"], report["skipped"]) == ([], [])
    future = await api.get(report["created"][0]["event_id"], leader)
    assert (future["title"], future["timezone"], future["venue"]["name"]) == (
        "Board games",
        "Europe/Berlin",
        "Cafe Central, Berlin",
    )
    assert future["venue"]["location"] == {"lat": 52.52, "lng": 13.405}
    assert datetime.fromisoformat(future["starts_at"]) == datetime(NEXT_YEAR, 7, 15, 17, tzinfo=UTC)
    past = await api.get(report["created"][1]["event_id"], leader)
    assert past["title"] == "Last year's picnic"  # the group's history, even though it is over
    scheduled = [e for e in await api.published("event") if e.type == "event.scheduled"]
    assert {e.aggregate_id for e in scheduled} >= {c["event_id"] for c in report["created"]}

    again = await _import(
        api,
        leader,
        group_id,
        ics(
            meetup("a@other", "Board games night"),
            meetup("b@other", "Last year's picnic", year=NEXT_YEAR - 2),
            meetup("c@other", extra=("STATUS:CANCELLED",)),
        ),
    )

    assert again.status_code == 200, again.text
    second = again.json()
    assert second["created"] == []
    assert [(u["uid"], u["event_id"]) for u in second["updated"]] == [("a@other", future["id"])]
    assert [(s["uid"], s["reason"]) for s in second["skipped"]] == [
        ("b@other", "unchanged"),
        ("c@other", "cancelled in the file"),
    ]
    assert (await api.get(future["id"], leader))["title"] == "Board games night"
    listed = await api.client.get("/api/events", params={"group_id": group_id}, headers=leader.auth)
    assert [e["id"] for e in listed.json()["items"]] == [future["id"]]

    cancelled = await _import(
        api, leader, group_id, ics(meetup("a@other", "Board games night", extra=("STATUS:CANCELLED",)))
    )
    assert cancelled.json()["updated"] == [{"uid": "a@other", "event_id": future["id"], "reason": "cancelled"}]
    assert (await api.get(future["id"], leader))["status"] == "cancelled"


async def test_vevents_it_cannot_take_are_skipped_with_the_reason(api: EventsApi) -> None:
    leader = await api.person("Skip Leader")
    group_id = await api.group(leader)
    day = f"{NEXT_YEAR}0801"
    body = ics(
        vevent(None, "SUMMARY:No uid", f"DTSTART:{day}T180000Z", f"DTEND:{day}T190000Z", "LOCATION:Park"),
        vevent("allday", "SUMMARY:Fair", f"DTSTART;VALUE=DATE:{day}", "LOCATION:Park"),
        vevent("floating", "SUMMARY:Run", f"DTSTART:{day}T180000", f"DTEND:{day}T190000", "LOCATION:Park"),
        vevent(
            "weekly", "SUMMARY:Run", f"DTSTART:{day}T180000Z", "DURATION:PT1H", "RRULE:FREQ=WEEKLY", "LOCATION:Park"
        ),
        vevent("nowhere", "SUMMARY:Run", f"DTSTART:{day}T180000Z", f"DTEND:{day}T190000Z"),
        vevent("backwards", "SUMMARY:Run", f"DTSTART:{day}T180000Z", f"DTEND:{day}T170000Z", "LOCATION:Park"),
        vevent("bad-tz", "SUMMARY:Run", f"DTSTART;TZID=Mars/Olympus:{day}T180000", "DURATION:PT1H", "LOCATION:Park"),
        vevent("online", "SUMMARY:Call", f"DTSTART:{day}T180000Z", "DURATION:PT1H", "URL:https://meet.example.org/x"),
        vevent("online", "SUMMARY:Again", f"DTSTART:{day}T180000Z", "DURATION:PT1H", "URL:https://meet.example.org/x"),
    )

    response = await _import(api, leader, group_id, body)

    assert response.status_code == 200, response.text
    report = response.json()
    created = report["created"]
    assert [c["uid"] for c in created] == ["online"]
    online = await api.get(created[0]["event_id"], leader)
    assert (online["timezone"], online["online"]) == ("UTC", True)
    reasons = {s["uid"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"", "allday", "floating", "weekly", "nowhere", "backwards", "bad-tz", "online"}
    assert "UID" in reasons[""] and "all-day" in reasons["allday"] and "IANA" in reasons["floating"]
    assert "recurring" in reasons["weekly"] and "venue" in reasons["nowhere"] and "ends_at" in reasons["backwards"]
    assert "IANA" in reasons["bad-tz"] and "repeated" in reasons["online"]


@pytest.mark.parametrize(("who", "status"), [("member", 403), ("outsider", 403), ("anonymous", 401)])
async def test_only_the_groups_leaders_import(api: EventsApi, who: str, status: int) -> None:
    leader, member, outsider = await api.people("Import Owner", "Import Member", "Import Outsider")
    group_id = await api.group(leader, members={member: "member"})
    person = {"member": member, "outsider": outsider, "anonymous": None}[who]
    response = await _import(api, person, group_id, ics(meetup("x@other")))
    assert response.status_code == status, response.text
    assert (await api.client.get("/api/events", params={"group_id": group_id})).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "text/calendar", 422),  # no VEVENT
        (b"\x00\xff\xfe garbage \x80", "text/calendar", 422),
        (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n" * 5000, "text/calendar", 422),  # never closed, deeply nested
        (b"BEGIN:VCALENDAR\r\nX-A;" + b"P=" * 100_000 + b":v\r\nEND:VCALENDAR\r\n", "text/calendar", 422),
        (ics(meetup("x@other")), "application/json", 422),
        (b"X" * (2 * 1024 * 1024 + 1), "text/calendar", 413),
        (ics(*(meetup(f"{i}@other") for i in range(1001))), "text/calendar", 422),
    ],
)
async def test_hostile_files_get_4xx_and_import_nothing(
    api: EventsApi, body: bytes, content_type: str, status: int
) -> None:
    leader = await api.person("Hostile Importer")
    group_id = await api.group(leader)
    response = await _import(api, leader, group_id, body, **{"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await api.client.get("/api/events", params={"group_id": group_id})).json()["items"] == []


async def test_importing_into_an_unknown_group_is_404(api: EventsApi) -> None:
    leader = await api.person("Lost Importer")
    response = await _import(api, leader, "00000000-0000-0000-0000-000000000000", ics(meetup("x@other")))
    assert response.status_code == 404, response.text
