"""POST /api/events/import through HTTP: a calendar file from another platform becomes a group's events (leaders
only), a re-import updates by UID instead of duplicating, the report says what was created, updated and skipped
and why, and hostile files get 4xx."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ical.calendar_stream import IcsCalendarStream

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
        ("b@other", "the event has started here"),
        ("c@other", "cancelled in the file"),
    ]
    assert (await api.get(future["id"], leader))["title"] == "Board games night"
    rewritten = await _import(api, leader, group_id, ics(meetup("b@other", "A rewritten past", year=NEXT_YEAR - 2)))
    assert rewritten.json()["skipped"] == [
        {"uid": "b@other", "event_id": past["id"], "reason": "the event has started here"}
    ]
    assert (await api.get(past["id"], leader))["title"] == "Last year's picnic"
    listed = await api.client.get("/api/events", params={"group_id": group_id}, headers=leader.auth)
    assert [e["id"] for e in listed.json()["items"]] == [future["id"]]

    cancelled = await _import(
        api, leader, group_id, ics(meetup("a@other", "Board games night", extra=("STATUS:CANCELLED",)))
    )
    assert cancelled.json()["updated"] == [{"uid": "a@other", "event_id": future["id"], "reason": "cancelled"}]
    assert (await api.get(future["id"], leader))["status"] == "cancelled"


async def _group_events(api: EventsApi, person: Person, group_id: str) -> list[dict[str, Any]]:
    """Every upcoming event of the group, soonest first (all pages)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"group_id": group_id, "limit": 100}
    while True:
        page = (await api.client.get("/api/events", params=params, headers=person.auth)).json()
        found += page["items"]
        if not page["next_cursor"]:
            return found
        params["cursor"] = page["next_cursor"]


def _expected_starts(body: bytes, zone: str, horizon_days: int = 183) -> list[datetime]:
    """The occurrences from now on within the horizon, as a second parser (ical, not icalendar) expands the file."""
    calendar = IcsCalendarStream.calendar_from_ics(body.decode())
    now = datetime.now(UTC)
    timeline = calendar.timeline_tz(ZoneInfo(zone)).active_after(now)
    starts = [e.dtstart for e in itertools.islice(timeline, 400)]
    return [s for s in starts if now < s < now + timedelta(days=horizon_days - 2)]


async def test_a_recurring_vevent_becomes_a_series_and_a_reimport_updates_it(api: EventsApi) -> None:
    leader = await api.person("Series Importer")
    group_id = await api.group(leader)
    # A weekly Tuesday 19:00 meetup in Berlin that began two years ago: only its upcoming occurrences come in.
    began = datetime.now(UTC).year - 2

    def weekly(title: str, *extra: str, rule: str = "FREQ=WEEKLY;BYDAY=TU") -> bytes:
        return ics(
            vevent(
                "tuesdays@other",
                f"SUMMARY:{title}",
                f"DTSTART;TZID=Europe/Berlin:{began}0106T190000",
                f"DTEND;TZID=Europe/Berlin:{began}0106T210000",
                f"RRULE:{rule}",
                "LOCATION:Cafe Central",
                *extra,
            )
        )

    first = weekly("Tuesday games")
    response = await _import(api, leader, group_id, first)

    assert response.status_code == 200, response.text
    [created] = response.json()["created"]
    assert created["uid"] == "tuesdays@other"
    occurrences = await _group_events(api, leader, group_id)
    expected = _expected_starts(first, "Europe/Berlin")
    assert len(expected) >= 24  # about six months of Tuesdays
    starts = [datetime.fromisoformat(e["starts_at"]) for e in occurrences]
    assert starts[: len(expected)] == expected
    assert {s.astimezone(ZoneInfo("Europe/Berlin")).hour for s in starts} == {19}  # across the DST change
    assert occurrences[0]["id"] == created["event_id"]
    series_id = (await api.get(created["event_id"], leader))["series_id"]
    assert series_id is not None
    # The same path as a series scheduled here: a leader's capacity for the following occurrences...
    response = await api.client.patch(
        f"/api/events/{created['event_id']}", params={"scope": "following"}, json={"capacity": 12}, headers=leader.auth
    )
    assert response.status_code == 200, response.text

    again = (await _import(api, leader, group_id, first)).json()
    assert again["skipped"] == [{"uid": "tuesdays@other", "event_id": created["event_id"], "reason": "unchanged"}]

    renamed = (await _import(api, leader, group_id, weekly("Tuesday board games"))).json()
    assert renamed["updated"] == [{"uid": "tuesdays@other", "event_id": created["event_id"], "reason": None}]
    after = await _group_events(api, leader, group_id)
    assert [e["id"] for e in after] == [e["id"] for e in occurrences]  # updated, not duplicated
    assert {(e["title"], e["capacity"]) for e in after} == {("Tuesday board games", 12)}  # ...survives the file

    other_rule = (await _import(api, leader, group_id, weekly("x", rule="FREQ=WEEKLY;BYDAY=WE"))).json()
    assert "rule" in other_rule["skipped"][0]["reason"]

    cancelled = (await _import(api, leader, group_id, weekly("Tuesday board games", "STATUS:CANCELLED"))).json()
    assert cancelled["updated"][0]["reason"] == "cancelled"
    assert await _group_events(api, leader, group_id) == []
    assert (await api.get(created["event_id"], leader))["status"] == "cancelled"


async def test_a_series_skips_its_exdates_and_a_reimport_with_a_new_one_cancels_that_occurrence(
    api: EventsApi,
) -> None:
    leader, fan = await api.people("Exdate Importer", "Exdate Fan")
    group_id = await api.group(leader, members={fan: "member"})
    await api.running.settle()
    monday = datetime.now(UTC).date() + timedelta(days=7 - datetime.now(UTC).weekday())  # next Monday
    skipped, later = monday + timedelta(weeks=1), monday + timedelta(weeks=3)

    def weekly(*exdates: str) -> bytes:
        extra = [f"EXDATE;TZID=Europe/Berlin:{day}" for day in exdates]
        return ics(
            vevent(
                "mondays@other",
                "SUMMARY:Monday run",
                f"DTSTART;TZID=Europe/Berlin:{monday:%Y%m%d}T190000",
                "DURATION:PT1H",
                "RRULE:FREQ=WEEKLY",
                "LOCATION:Park",
                *extra,
            )
        )

    # Two EXDATE lines, one with a list: the forms calendars write; the second parser agrees on what is left.
    first = weekly(f"{skipped:%Y%m%d}T190000", f"{later:%Y%m%d}T190000,{later + timedelta(weeks=1):%Y%m%d}T190000")
    response = await _import(api, leader, group_id, first)
    assert response.status_code == 200, response.text
    days = [datetime.fromisoformat(e["starts_at"]).date() for e in await _group_events(api, leader, group_id)]
    assert skipped not in days and later not in days and later + timedelta(weeks=1) not in days
    assert days[: len(_expected_starts(first, "Europe/Berlin"))] == [
        s.date() for s in _expected_starts(first, "Europe/Berlin")
    ]
    assert (await _import(api, leader, group_id, first)).json()["skipped"][0]["reason"] == "unchanged"

    # The other platform drops the meetup two weeks on: the occurrence here is cancelled, and its attendee told.
    dropped = monday + timedelta(weeks=2)
    [occurrence] = [
        e
        for e in await _group_events(api, leader, group_id)
        if datetime.fromisoformat(e["starts_at"]).date() == dropped
    ]
    await api.going(fan, occurrence["id"])
    again = weekly(
        f"{dropped:%Y%m%d}T190000,{skipped:%Y%m%d}T190000",
        f"{later:%Y%m%d}T190000,{later + timedelta(weeks=1):%Y%m%d}T190000",
    )
    response = await _import(api, leader, group_id, again)

    assert response.status_code == 200, response.text
    assert [u["uid"] for u in response.json()["updated"]] == ["mondays@other"]
    assert (await api.get(occurrence["id"], leader))["status"] == "cancelled"
    cancelled = [e for e in await api.published("event", occurrence["id"]) if e.type == "event.cancelled"]
    assert len(cancelled) == 1
    left = [datetime.fromisoformat(e["starts_at"]).date() for e in await _group_events(api, leader, group_id)]
    assert dropped not in left and monday in left and monday + timedelta(weeks=5) in left


def _occurrences(body: bytes) -> list[tuple[datetime, str]]:
    """(start, title) of what is not cancelled from now on within the horizon, as a second parser (ical) reads the
    file with its RDATEs and changed occurrences."""
    calendar = IcsCalendarStream.calendar_from_ics(body.decode())
    now = datetime.now(UTC)
    timeline = calendar.timeline_tz(ZoneInfo("Europe/Berlin")).active_after(now)
    found = [(e.dtstart, e.summary or "") for e in itertools.islice(timeline, 400) if e.status != "CANCELLED"]
    return [(start, title) for start, title in found if now < start < now + timedelta(days=181)]


def _berlin(day: date, at: str) -> str:
    return f"{day:%Y%m%d}T{at}"


async def test_rdates_add_occurrences_and_recurrence_ids_change_or_cancel_one_and_a_reimport_follows_the_file(
    api: EventsApi,
) -> None:
    leader, fan = await api.people("Rdate Importer", "Rdate Fan")
    group_id = await api.group(leader, members={fan: "member"})
    await api.running.settle()
    monday = datetime.now(UTC).date() + timedelta(days=7 - datetime.now(UTC).weekday())  # next Monday
    wednesday, thursday = monday + timedelta(days=2), monday + timedelta(days=10)
    moved, dropped = monday + timedelta(weeks=3), monday + timedelta(weeks=4)

    def calendar(*rdates: str, moved_title: str = "Tuesday run instead") -> bytes:
        return ics(
            vevent(
                "runs@other",
                "SUMMARY:Monday run",
                f"DTSTART;TZID=Europe/Berlin:{_berlin(monday, '190000')}",
                "DURATION:PT1H",
                "RRULE:FREQ=WEEKLY",
                "LOCATION:Park",
                *(f"RDATE;TZID=Europe/Berlin:{rdate}" for rdate in rdates),
            ),
            # One Monday moves to the Tuesday at 18:00 in another place; another one is called off.
            vevent(
                "runs@other",
                f"SUMMARY:{moved_title}",
                f"RECURRENCE-ID;TZID=Europe/Berlin:{_berlin(moved, '190000')}",
                f"DTSTART;TZID=Europe/Berlin:{_berlin(moved + timedelta(days=1), '180000')}",
                "DURATION:PT1H",
                "LOCATION:Stadium",
            ),
            vevent(
                "runs@other",
                "SUMMARY:Monday run",
                "STATUS:CANCELLED",
                f"RECURRENCE-ID;TZID=Europe/Berlin:{_berlin(dropped, '190000')}",
                f"DTSTART;TZID=Europe/Berlin:{_berlin(dropped, '190000')}",
                "DURATION:PT1H",
                "LOCATION:Park",
            ),
        )

    # An extra Wednesday at the usual time, and an extra Thursday at 20:30 (one line, a list of two).
    first = calendar(f"{_berlin(wednesday, '190000')},{_berlin(thursday, '203000')}")
    response = await _import(api, leader, group_id, first)

    assert response.status_code == 200, response.text
    report = response.json()
    assert [c["uid"] for c in report["created"]] == ["runs@other"] and report["skipped"] == []
    events = await _group_events(api, leader, group_id)
    made = [(datetime.fromisoformat(e["starts_at"]), e["title"]) for e in events]
    expected = _occurrences(first)
    assert made[: len(expected)] == expected  # the second parser agrees on every date, time and title
    by_start = {datetime.fromisoformat(e["starts_at"]): e for e in events}
    berlin = ZoneInfo("Europe/Berlin")
    tuesday = by_start[datetime.combine(moved + timedelta(days=1), time(18), berlin)]
    assert (tuesday["title"], tuesday["venue"]["name"]) == ("Tuesday run instead", "Stadium")
    assert datetime.combine(thursday, time(20, 30), berlin) in by_start
    assert datetime.combine(wednesday, time(19), berlin) in by_start
    assert datetime.combine(moved, time(19), berlin) not in by_start
    assert datetime.combine(dropped, time(19), berlin) not in by_start

    again = (await _import(api, leader, group_id, first)).json()  # the same file again changes nothing
    assert again["skipped"] == [{"uid": "runs@other", "event_id": events[0]["id"], "reason": "unchanged"}]
    assert [e["id"] for e in await _group_events(api, leader, group_id)] == [e["id"] for e in events]

    # The other platform renames the moved run, drops the Thursday and adds a Friday: the same events follow.
    thursday_id = by_start[datetime.combine(thursday, time(20, 30), berlin)]["id"]
    await api.going(fan, thursday_id)
    friday = monday + timedelta(days=11)
    changed = calendar(
        f"{_berlin(wednesday, '190000')}", f"{_berlin(friday, '190000')}", moved_title="Tuesday run, track"
    )
    response = await _import(api, leader, group_id, changed)

    assert response.status_code == 200, response.text
    assert [u["uid"] for u in response.json()["updated"]] == ["runs@other"]
    after = await _group_events(api, leader, group_id)
    assert [(datetime.fromisoformat(e["starts_at"]), e["title"]) for e in after][: len(_occurrences(changed))] == (
        _occurrences(changed)
    )
    assert (await api.get(tuesday["id"], leader))["title"] == "Tuesday run, track"  # updated, not made again
    assert (await api.get(thursday_id, leader))["status"] == "cancelled"
    told = [e for e in await api.published("event", thursday_id) if e.type == "event.cancelled"]
    assert [e.payload["attendee_ids"] for e in told] == [[fan.user_id]]
    assert datetime.combine(friday, time(19), berlin) in {datetime.fromisoformat(e["starts_at"]) for e in after}


async def test_changed_occurrences_and_rdates_it_cannot_take_get_report_lines(api: EventsApi) -> None:
    leader = await api.person("Recurrence-id Skipper")
    group_id = await api.group(leader)
    monday = datetime.now(UTC).date() + timedelta(days=7 - datetime.now(UTC).weekday())
    series = (
        "SUMMARY:Monday run",
        f"DTSTART;TZID=Europe/Berlin:{_berlin(monday, '190000')}",
        "DURATION:PT1H",
        "RRULE:FREQ=WEEKLY",
        "LOCATION:Park",
    )

    def change(uid: str, day: date, *lines: str, params: str = ";TZID=Europe/Berlin") -> str:
        when = (f"DTSTART;TZID=Europe/Berlin:{_berlin(day, '200000')}", "DURATION:PT1H", "LOCATION:Park")
        return vevent(uid, "SUMMARY:Changed", f"RECURRENCE-ID{params}:{_berlin(day, '190000')}", *when, *lines)

    body = ics(
        vevent("runs", *series),
        change("runs", monday + timedelta(days=1)),  # a Tuesday: not a date of the series
        change("runs", monday + timedelta(weeks=1), params=";RANGE=THISANDFUTURE;TZID=Europe/Berlin"),
        change("runs", monday - timedelta(weeks=60)),  # long past
        change("runs", monday + timedelta(weeks=2)),
        change("runs", monday + timedelta(weeks=2)),  # the same date twice
        vevent(  # a floating start with no calendar zone to read it in
            "runs",
            "SUMMARY:Changed",
            f"RECURRENCE-ID;TZID=Europe/Berlin:{_berlin(monday + timedelta(weeks=3), '190000')}",
            f"DTSTART:{_berlin(monday + timedelta(weeks=3), '200000')}",
            "DURATION:PT1H",
            "LOCATION:Park",
        ),
        change("orphan", monday),  # no series in the file
        vevent("many", *series, "RDATE:" + ",".join(["20300101T180000Z"] * 1001)),
        vevent("huge", *series, "RDATE:" + ",".join(f"{2030 + i // 365}0101T180000Z" for i in range(50_000))),
    )
    assert len(body) < 1024 * 1024

    response = await _import(api, leader, group_id, body)

    assert response.status_code == 200, response.text
    report = response.json()
    assert [c["uid"] for c in report["created"]] == ["runs"]
    reasons = [(s["uid"], s["reason"]) for s in report["skipped"]]
    assert [uid for uid, _ in reasons] == ["many", "huge", *["runs"] * 5, "orphan"]
    why = [reason for _, reason in reasons]
    assert "more than 1000 RDATEs" in why[0] and "more than 1000 RDATEs" in why[1]
    assert "no occurrence on that date" in why[2] and f"{monday + timedelta(days=1)}" in why[2]
    assert "THISANDFUTURE" in why[3] and "past" in why[4] and "repeated" in why[5] and "IANA" in why[6]
    assert "RECURRENCE-ID" in why[7]
    # The one change it could take is made; the rest of the series is as its rule has it.
    starts = {datetime.fromisoformat(e["starts_at"]) for e in await _group_events(api, leader, group_id)}
    berlin = ZoneInfo("Europe/Berlin")
    assert datetime.combine(monday + timedelta(weeks=2), time(20), berlin) in starts
    assert datetime.combine(monday + timedelta(weeks=1), time(19), berlin) in starts
    assert datetime.combine(monday + timedelta(weeks=3), time(19), berlin) in starts


async def test_all_day_events_last_from_midnight_to_midnight_in_the_calendars_zone(api: EventsApi) -> None:
    leader = await api.person("All-day Importer")
    group_id = await api.group(leader)
    day, last = f"{NEXT_YEAR}0801", f"{NEXT_YEAR}0803"
    soon = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y%m%d")  # a series needs dates within six months
    body = (
        ics(
            vevent(
                "fair", "SUMMARY:Street fair", f"DTSTART;VALUE=DATE:{day}", f"DTEND;VALUE=DATE:{last}", "LOCATION:Park"
            ),
            vevent("picnic", "SUMMARY:Picnic", f"DTSTART;VALUE=DATE:{day}", "LOCATION:Park"),
            vevent("run", "SUMMARY:Run", f"DTSTART:{day}T180000", "DURATION:PT1H", "LOCATION:Park"),  # floating
            vevent("monthly", "SUMMARY:Market", f"DTSTART;VALUE=DATE:{soon}", "RRULE:FREQ=MONTHLY", "LOCATION:Park"),
        )
        .decode()
        .replace("PRODID:-//Other//Platform//EN", "PRODID:-//Other//Platform//EN\r\nX-WR-TIMEZONE:Europe/Berlin")
        .encode()
    )
    parsed = {e.uid: e for e in IcsCalendarStream.calendar_from_ics(body.decode()).events}  # the second parser

    response = await _import(api, leader, group_id, body)

    assert response.status_code == 200, response.text
    created = {c["uid"]: c["event_id"] for c in response.json()["created"]}
    assert set(created) == {"fair", "picnic", "run", "monthly"}
    berlin = ZoneInfo("Europe/Berlin")
    for uid, days in (("fair", 2), ("picnic", 1), ("monthly", 1)):
        event = await api.get(created[uid], leader)
        starts, ends = datetime.fromisoformat(event["starts_at"]), datetime.fromisoformat(event["ends_at"])
        assert event["timezone"] == "Europe/Berlin"
        assert starts.astimezone(berlin).replace(tzinfo=None) == datetime.combine(
            parsed[uid].dtstart, datetime.min.time()
        )
        assert ends - starts == timedelta(days=days)
    assert (await api.get(created["monthly"], leader))["series_id"] is not None
    run = await api.get(created["run"], leader)
    assert datetime.fromisoformat(run["starts_at"]) == datetime(NEXT_YEAR, 8, 1, 18, tzinfo=berlin)

    # Without X-WR-TIMEZONE an all-day event is a UTC day.
    utc_day = ics(vevent("utc-fair", "SUMMARY:Fair", f"DTSTART;VALUE=DATE:{day}", "LOCATION:Park"))
    [made] = (await _import(api, leader, group_id, utc_day)).json()["created"]
    event = await api.get(made["event_id"], leader)
    assert (event["timezone"], event["starts_at"]) == ("UTC", f"{NEXT_YEAR}-08-01T00:00:00Z")


async def test_vevents_it_cannot_take_are_skipped_with_the_reason(api: EventsApi) -> None:
    leader = await api.person("Skip Leader")
    group_id = await api.group(leader)
    day = f"{NEXT_YEAR}0801"
    at = (f"DTSTART:{day}T180000Z", "DURATION:PT1H", "LOCATION:Park")
    body = ics(
        vevent(None, "SUMMARY:No uid", f"DTSTART:{day}T180000Z", f"DTEND:{day}T190000Z", "LOCATION:Park"),
        vevent("floating", "SUMMARY:Run", f"DTSTART:{day}T180000", f"DTEND:{day}T190000", "LOCATION:Park"),
        vevent("hourly", "SUMMARY:Run", *at, "RRULE:FREQ=HOURLY"),
        vevent("moved", "SUMMARY:Run", *at, f"RECURRENCE-ID:{day}T180000Z"),
        vevent("extra", "SUMMARY:Run", *at, f"RDATE:{day}T200000Z"),  # extra dates of no rule
        vevent("holey", "SUMMARY:Run", *at, "RRULE:FREQ=DAILY", "EXDATE:" + ",".join(["20300101T180000Z"] * 1001)),
        vevent("over", "SUMMARY:Run", "DTSTART:20200101T180000Z", *at[1:], "RRULE:FREQ=DAILY;COUNT=3"),
        vevent("nowhere", "SUMMARY:Run", f"DTSTART:{day}T180000Z", f"DTEND:{day}T190000Z"),
        vevent("backwards", "SUMMARY:Run", f"DTSTART:{day}T180000Z", f"DTEND:{day}T170000Z", "LOCATION:Park"),
        vevent("bad-tz", "SUMMARY:Run", f"DTSTART;TZID=Mars/Olympus:{day}T180000", "DURATION:PT1H", "LOCATION:Park"),
        vevent("long", "SUMMARY:" + "a" * 201, *at),
        vevent("far", "SUMMARY:Run", *at[:2], "LOCATION:" + "Park " * 50),
        vevent("spoof", "SUMMARY:Run \u202egnp.exe", *at),
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
    assert set(reasons) == {
        *("", "floating", "hourly", "moved", "extra", "holey", "over", "nowhere", "backwards", "bad-tz"),
        *("long", "far", "spoof", "online"),
    }
    assert "UID" in reasons[""] and "IANA" in reasons["floating"] and "FREQ" in reasons["hourly"]
    assert (
        "RECURRENCE-ID" in reasons["moved"]
        and "RDATE without an RRULE" in reasons["extra"]
        and "EXDATE" in reasons["holey"]
    )
    assert "six months" in reasons["over"] and "venue" in reasons["nowhere"] and "ends_at" in reasons["backwards"]
    assert "IANA" in reasons["bad-tz"] and "repeated" in reasons["online"]
    assert "title" in reasons["long"] and "venue.name" in reasons["far"] and "bidirectional" in reasons["spoof"]


async def test_hostile_text_in_a_file_is_skipped_not_stored(api: EventsApi) -> None:
    """Files do not pass the JSON text policy: NUL (PostgreSQL refuses it), control characters and bytes that are
    not UTF-8 are handled by the import itself; the report stays valid JSON."""
    leader = await api.person("Hostile Text Importer")
    group_id = await api.group(leader)
    at = f"DTSTART:{NEXT_YEAR}0801T180000Z\r\nDURATION:PT1H\r\nLOCATION:Park".replace("\\r\\n", "\r\n")
    body = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\n"
        f"BEGIN:VEVENT\r\nUID:nul\x00uid\r\nSUMMARY:Run\r\n{at}\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:nul-title\r\nSUMMARY:Ru\x00n\r\n{at}\r\nEND:VEVENT\r\n"
        f"BEGIN:VEVENT\r\nUID:escape\r\nSUMMARY:Run\r\nDESCRIPTION:\x1b[2J\r\n{at}\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    ).encode()
    body = body.replace(b"SUMMARY:Run\r\nDESC", b"SUMMARY:R\xed\xa0\x80un\r\nDESC")  # an encoded surrogate
    response = await _import(api, leader, group_id, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == []
    reasons = {s["uid"]: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "'nul\\x00uid'": "no UID, or one that is not printable text of at most 255 characters",
        "nul-title": "title must not contain the NUL character.",
        "escape": "description must not contain control characters.",
    }


@pytest.mark.parametrize(("who", "status"), [("member", 403), ("outsider", 403), ("anonymous", 401)])
async def test_only_the_groups_leaders_import(api: EventsApi, who: str, status: int) -> None:
    leader, member, outsider = await api.people("Import Owner", "Import Member", "Import Outsider")
    group_id = await api.group(leader, members={member: "member"})
    person = {"member": member, "outsider": outsider, "anonymous": None}[who]
    response = await _import(api, person, group_id, ics(meetup("x@other")))
    assert response.status_code == status, response.text
    # Refused before the file is read: an unreadable one gets the same answer, not 422.
    response = await _import(api, person, group_id, b"not a calendar")
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
        (b"X" * (1024 * 1024 + 1), "text/calendar", 413),
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


async def test_broken_geo_and_times_past_the_storable_years_are_skipped_not_a_500(api: EventsApi) -> None:
    leader = await api.person("Far Future Importer")
    group_id = await api.group(leader)
    body = ics(
        vevent(
            "nan", "SUMMARY:Run", f"DTSTART:{NEXT_YEAR}0801T180000Z", "DURATION:PT1H", "LOCATION:Park", "GEO:nan;nan"
        ),
        vevent("weeks", "SUMMARY:Run", "DTSTART:99991231T230000Z", "DURATION:P9999W", "LOCATION:Park"),
        vevent("days", "SUMMARY:Fair", "DTSTART;VALUE=DATE:99991231", "LOCATION:Park"),
        vevent("early", "SUMMARY:Fair", "DTSTART;VALUE=DATE:00010101", "DURATION:P99999999D", "LOCATION:Park"),
    )
    response = await _import(api, leader, group_id, body)
    assert response.status_code == 200, response.text
    reasons = {s["uid"]: s["reason"] for s in response.json()["skipped"]}
    assert reasons == {
        "nan": "a property could not be read",  # icalendar raises only when the broken GEO is read
        **dict.fromkeys(("weeks", "days", "early"), "a time outside the years this service can store"),
    }
