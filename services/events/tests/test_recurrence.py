"""Recurring series through HTTP: occurrences made ahead as real events in the event's own time zone (19:00 stays
19:00 local across daylight saving), edits and cancellations of one occurrence or of it and the following ones,
the top-up as time passes, and hostile rules refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrule

from gatherly.app.testing import Person
from gatherly.events import service
from gatherly.events.store import EventsUnitOfWork
from gatherly.kernel.clock import FrozenClock

EventsApi = Any  # the `api` fixture of conftest.py (test modules do not import conftest)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _zone_with_dst_change() -> str:
    """A zone whose clocks change within the next five months (which one depends on today's date)."""
    today = datetime.now(UTC)
    for name in ("Europe/Berlin", "America/Santiago", "Australia/Sydney"):
        zone = ZoneInfo(name)
        offsets = {(today + timedelta(weeks=w)).astimezone(zone).utcoffset() for w in range(1, 22)}
        if len(offsets) > 1:
            return name
    raise AssertionError("no zone with a daylight-saving change ahead")


def _next_week_at(zone: str, hour: int, days: int = 7) -> datetime:
    day = (datetime.now(UTC) + timedelta(days=days)).astimezone(ZoneInfo(zone)).date()
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone))


async def _series(api: EventsApi, leader: Person, group_id: str, rule: str, **fields: Any) -> dict[str, Any]:
    zone = fields.pop("timezone", "Europe/Berlin")
    starts = fields.pop("starts_at", _next_week_at(zone, 19))
    return await api.schedule(
        leader,
        group_id,
        starts_at=starts.isoformat(),
        ends_at=(starts + timedelta(hours=2)).isoformat(),
        timezone=zone,
        recurrence=rule,
        **fields,
    )


async def _occurrences(api: EventsApi, group_id: str, person: Person, **params: Any) -> list[dict[str, Any]]:
    """Every scheduled event of the group, soonest first, as the search lists them."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"group_id": group_id, "limit": 100, **params} | ({"cursor": cursor} if cursor else {})
        response = await api.client.get("/api/events", params=query, headers=person.auth)
        assert response.status_code == 200, response.text
        found += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


def _local(event: dict[str, Any], key: str = "starts_at") -> datetime:
    return datetime.fromisoformat(event[key]).astimezone(ZoneInfo(event["timezone"]))


async def test_a_weekly_series_stays_at_19_local_across_a_daylight_saving_change(api: EventsApi) -> None:
    leader, member = await api.people("Series Leader", "Series Member")
    group_id = await api.group(leader, members={member: "member"})
    zone = _zone_with_dst_change()

    first = await _series(api, leader, group_id, "FREQ=WEEKLY", timezone=zone)

    events = await _occurrences(api, group_id, leader)
    assert events[0]["id"] == first["id"] and first["series_id"] is not None
    # Six months ahead: 26 or 27 weekly dates, a week apart on the local calendar, all at 19:00 local.
    assert 26 <= len(events) <= 27
    starts = [_local(e) for e in events]
    assert {(s.hour, s.minute) for s in starts} == {(19, 0)}
    assert all((b.date() - a.date()).days == 7 for a, b in pairwise(starts))
    assert {_local(e, "ends_at").hour for e in events} == {21}
    # ...which is two different UTC times: the rule was expanded in the zone, not in UTC.
    assert len({datetime.fromisoformat(e["starts_at"]).astimezone(UTC).hour for e in events}) == 2
    # Each occurrence is an event of its own with its own RSVPs.
    await api.going(member, events[1]["id"])
    assert (await api.get(events[1]["id"], member))["my_rsvp"]["status"] == "going"
    assert (await api.get(events[2]["id"], member))["my_rsvp"] is None


async def test_count_bounds_a_series_and_an_endless_rule_is_made_six_months_ahead_only(api: EventsApi) -> None:
    leader = await api.person("Count Leader")
    counted = await api.group(leader)
    await _series(api, leader, counted, "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=5")
    events = await _occurrences(api, counted, leader)
    assert len(events) == 5
    assert {_local(e).strftime("%a") for e in events} == {"Tue", "Thu"}

    endless = await api.group(leader)
    await _series(api, leader, endless, "FREQ=DAILY")
    daily = await _occurrences(api, endless, leader)
    horizon = datetime.now(UTC) + timedelta(days=184)
    assert 170 <= len(daily) <= 184
    assert all(datetime.fromisoformat(e["starts_at"]) < horizon for e in daily)


async def test_a_start_with_fractions_of_a_second_keeps_its_first_occurrence(api: EventsApi) -> None:
    """dateutil drops the first start's microseconds; the first occurrence must not be lost for it."""
    leader = await api.person("Fraction Leader")
    group_id = await api.group(leader)
    starts = _next_week_at("Europe/Berlin", 19) + timedelta(seconds=4, microseconds=247_327)
    first = await _series(api, leader, group_id, "FREQ=WEEKLY;COUNT=5", starts_at=starts)
    events = await _occurrences(api, group_id, leader)
    assert datetime.fromisoformat(first["starts_at"]) == starts
    assert [e["id"] for e in events][:1] == [first["id"]] and len(events) == 5


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=SECONDLY",
        "FREQ=MINUTELY;COUNT=5",
        "FREQ=HOURLY",
        "FREQ=DAILY;COUNT=100000",
        "FREQ=WEEKLY;COUNT=5;UNTIL=20300101",
        "FREQ=DAILY;BYHOUR=1,2,3,4,5,6,7,8,9,10",
        "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=30",  # never happens: dateutil would search until the year 9999
        "FREQ=MONTHLY;BYDAY=6MO",
        "FREQ=DAILY;INTERVAL=7;BYDAY=TU",
        "FREQ=WEEKLY;BYDAY=XX",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;UNTIL=20270101",  # no 29 February within it
        "DTSTART:20300101T000000\nRRULE:FREQ=DAILY",
        "not a rule",
        "",
    ],
)
async def test_hostile_or_impossible_rules_are_refused_with_422_at_once(
    api: EventsApi, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = await api.person("Hostile Leader")
    group_id = await api.group(leader)
    starts = _next_week_at("Europe/Berlin", 19)
    body = api.event_body(group_id, **api.an_hour_from(starts), recurrence=rule)
    # "At once": refused before dateutil expands anything (a search of its can run until the year 9999), but for a
    # rule its own UNTIL bounds, searched once up to it. Counted rather than timed, so that a loaded machine cannot
    # fail it and an unbounded search cannot pass it.
    expansions = 0
    expand = rrule._iter

    def counting_expansions(self: rrule) -> Iterator[datetime]:
        nonlocal expansions
        expansions += 1
        return expand(self)

    monkeypatch.setattr(rrule, "_iter", counting_expansions)
    response = await api.client.post("/api/events", json=body, headers=leader.auth)
    assert expansions == (1 if "UNTIL=2027" in rule else 0)
    assert response.status_code == 422, response.text
    assert await _occurrences(api, group_id, leader) == []


async def test_editing_one_occurrence_changes_it_alone(api: EventsApi) -> None:
    leader = await api.person("Edit Leader")
    group_id = await api.group(leader)
    await _series(api, leader, group_id, "FREQ=WEEKLY;COUNT=4")
    events = await _occurrences(api, group_id, leader)

    response = await api.client.patch(
        f"/api/events/{events[1]['id']}", params={"scope": "this"}, json={"title": "Special"}, headers=leader.auth
    )

    assert response.status_code == 200, response.text
    titles = [e["title"] for e in await _occurrences(api, group_id, leader)]
    assert titles == ["Evening run", "Special", "Evening run", "Evening run"]


async def test_editing_this_and_following_moves_the_time_of_day_on_each_date_and_for_later_ones(
    api: EventsApi,
) -> None:
    leader, member = await api.people("Following Leader", "Following Member")
    group_id = await api.group(leader, members={member: "member"})
    zone = _zone_with_dst_change()
    await _series(api, leader, group_id, "FREQ=WEEKLY", timezone=zone, capacity=1)
    events = await _occurrences(api, group_id, leader)
    await api.going(member, events[3]["id"])
    third = _local(events[2])
    later = third.replace(hour=20, minute=30)

    response = await api.client.patch(
        f"/api/events/{events[2]['id']}",
        params={"scope": "following"},
        json={
            "title": "Later run",
            **api.an_hour_from(later),
        },
        headers=leader.auth,
    )

    assert response.status_code == 200, response.text
    assert (response.json()["title"], _local(response.json()).hour) == ("Later run", 20)
    after = await _occurrences(api, group_id, leader)
    assert [e["id"] for e in after] == [e["id"] for e in events]
    assert [e["title"] for e in after[:2]] == ["Evening run"] * 2
    assert {(_local(e).hour, _local(e).minute) for e in after[:2]} == {(19, 0)}
    assert {e["title"] for e in after[2:]} == {"Later run"}
    assert {(_local(e).hour, _local(e).minute, _local(e, "ends_at").hour) for e in after[2:]} == {(20, 30, 21)}
    # RSVPs stay with their occurrence.
    assert (await api.get(events[3]["id"], member))["my_rsvp"]["status"] == "going"
    # Occurrences made later follow the edit too.
    made = await _top_up(api, datetime.now(UTC) + timedelta(days=60))
    assert made >= 8
    newest = (await _occurrences(api, group_id, leader))[-1]
    assert (newest["title"], _local(newest).hour, _local(newest).minute) == ("Later run", 20, 30)


async def test_following_edits_keep_the_date_and_are_for_series_only(api: EventsApi) -> None:
    leader = await api.person("Date Leader")
    group_id = await api.group(leader)
    await _series(api, leader, group_id, "FREQ=WEEKLY;COUNT=3")
    events = await _occurrences(api, group_id, leader)
    moved = _local(events[1]) + timedelta(days=1)

    response = await api.client.patch(
        f"/api/events/{events[1]['id']}",
        params={"scope": "following"},
        json=api.an_hour_from(moved),
        headers=leader.auth,
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "starts_at"

    single = await api.schedule(leader, group_id)
    for method, path, body in (
        ("PATCH", f"/api/events/{single['id']}", {"title": "x"}),
        ("POST", f"/api/events/{single['id']}/cancel", None),
    ):
        response = await api.client.request(method, path, params={"scope": "following"}, json=body, headers=leader.auth)
        assert response.status_code == 422, response.text
    response = await api.client.patch(
        f"/api/events/{events[0]['id']}", params={"scope": "all"}, json={"title": "x"}, headers=leader.auth
    )
    assert response.status_code == 422


async def test_cancelling_one_occurrence_or_this_and_following_ends_the_series_there(api: EventsApi) -> None:
    leader, member = await api.people("Cancel Leader", "Cancel Member")
    group_id = await api.group(leader, members={member: "member"})
    await _series(api, leader, group_id, "FREQ=WEEKLY")
    events = await _occurrences(api, group_id, leader)
    await api.going(member, events[5]["id"])

    one = await api.client.post(f"/api/events/{events[1]['id']}/cancel", params={"scope": "this"}, headers=leader.auth)
    assert one.status_code == 200 and one.json()["status"] == "cancelled"
    rest = await api.client.post(
        f"/api/events/{events[4]['id']}/cancel", params={"scope": "following"}, headers=leader.auth
    )
    assert rest.status_code == 200 and rest.json()["status"] == "cancelled"

    left = [e["id"] for e in await _occurrences(api, group_id, leader)]
    assert left == [events[0]["id"], events[2]["id"], events[3]["id"]]
    assert (await api.get(events[10]["id"], leader))["status"] == "cancelled"
    cancelled = [e for e in await api.published("event", events[5]["id"]) if e.type == "event.cancelled"]
    assert cancelled[0].payload["attendee_ids"] == [member.user_id]
    # The series makes no more occurrences.
    await _top_up(api, datetime.now(UTC) + timedelta(days=90))
    assert [e["id"] for e in await _occurrences(api, group_id, leader)] == left


async def test_the_top_up_makes_the_dates_that_came_within_six_months_once(api: EventsApi) -> None:
    leader = await api.person("Top-up Leader")
    group_id = await api.group(leader)
    await _series(api, leader, group_id, "FREQ=WEEKLY")
    before = await _occurrences(api, group_id, leader)
    last = _local(before[-1]).date()
    a_month_later = datetime.now(UTC) + timedelta(days=31)

    assert await _top_up(api, a_month_later) >= 4
    assert await _top_up(api, a_month_later) == 0

    after = await _occurrences(api, group_id, leader)
    assert [e["id"] for e in after[: len(before)]] == [e["id"] for e in before]
    added = [_local(e) for e in after[len(before) :]]
    assert 4 <= len(added) <= 5
    assert added[0].date() == last + timedelta(days=7)
    assert {(s.hour, s.weekday()) for s in added} == {(19, _local(before[0]).weekday())}
    published = [e for e in await api.published("event") if e.payload.get("group_id") == group_id]
    assert len([e for e in published if e.type == "event.scheduled"]) == len(after)


async def _top_up(api: EventsApi, when: datetime) -> int:
    """A round of the top-up loop as it would run at `when`."""
    context = api.running.process.host("events").context
    made = await service.top_up_series(EventsUnitOfWork(context.db, clock=FrozenClock(when), signal=context.signal))
    await api.running.settle()
    return made
