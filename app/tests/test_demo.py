"""`gatherly up` starts with demo data that obeys the same rules as real data, loaded once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gatherly.app.demo import DEMO_PASSWORD, EVENTS, GROUPS, PEOPLE
from gatherly.app.services import ALL
from gatherly.app.testing import running_gatherly
from gatherly.kernel.testing import DB_BACKENDS, scratch_databases


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_demo_people_can_log_in_and_the_demo_groups_are_listed(tmp_path: Path, database_backend: str) -> None:
    async with scratch_databases(database_backend, tmp_path, list(ALL)) as database_url:
        await demo_is_loaded_once(tmp_path, database_url)


async def demo_is_loaded_once(tmp_path: Path, database_url: str) -> None:
    async with running_gatherly(tmp_path, demo=True, database_url=database_url) as gatherly:
        login = await gatherly.client.post(
            "/api/auth/login", json={"email": PEOPLE[0].email, "password": DEMO_PASSWORD}
        )
        assert login.status_code == 200
        listed = await gatherly.client.get("/api/groups", params={"limit": 100})
        assert listed.status_code == 200
        by_name = {group["name"]: group for group in listed.json()["items"]}
        assert {spec["name"] for spec in GROUPS} <= by_name.keys()

        # An approval group holds what its organizer decided: one approved member, one request still waiting.
        hikers = next(spec for spec in GROUPS if spec["name"] == "Alpine Weekend Hikers")
        owner_login = await gatherly.client.post(
            "/api/auth/login", json={"email": hikers["owner"], "password": DEMO_PASSWORD}
        )
        owner = {"Authorization": f"Bearer {owner_login.json()['access_token']}"}
        group_id = by_name["Alpine Weekend Hikers"]["id"]
        assert by_name["Alpine Weekend Hikers"]["member_count"] == 2
        pending = (await gatherly.client.get(f"/api/groups/{group_id}/requests", headers=owner)).json()["items"]
        assert [[a["answer"] for a in request["answers"]] for request in pending] == [["None yet, but keen to learn!"]]

        # Upcoming events in the demo groups, answered and commented on by the demo people.
        await upcoming_demo_events_are_shown(
            gatherly.client, {"Authorization": f"Bearer {login.json()['access_token']}"}
        )
    # A second start on the same data loads nothing twice.
    async with running_gatherly(tmp_path, demo=True, database_url=database_url) as gatherly:
        listed = await gatherly.client.get("/api/groups", params={"limit": 100})
        names = [group["name"] for group in listed.json()["items"]]
        assert names.count(GROUPS[0]["name"]) == 1
        events = (await gatherly.client.get("/api/events", params={"q": "lightning"})).json()["items"]
        assert len(events) == 1


async def upcoming_demo_events_are_shown(client: httpx.AsyncClient, ada: dict[str, str]) -> None:
    listed = await client.get("/api/events", params={"limit": 100})
    assert listed.status_code == 200
    events = listed.json()["items"]
    titles = [event["title"] for event in events]
    assert {spec["title"] for spec in EVENTS} <= set(titles)
    # Recurring: the monthly meetup is a series of real events, six months of them.
    monthly = [event for event in events if event["title"] == "Monthly Python Meetup"]
    assert len(monthly) >= 5
    first = (await client.get(f"/api/events/{monthly[0]['id']}", headers=ada)).json()
    assert first["series_id"] is not None and first["going_count"] == 2
    # Full, with a waitlist; and one online.
    lightning = next(event for event in events if event["title"].startswith("Lightning talks"))
    full = (await client.get(f"/api/events/{lightning['id']}")).json()
    assert (full["going_count"], full["capacity"], full["waitlist_count"]) == (3, 3, 1)
    online = next(event for event in events if event["title"].startswith("Book circle online"))
    assert online["online"] is True and online["venue"] is None
    comments = await client.get(f"/api/events/{monthly[0]['id']}/comments", headers=ada)
    assert [c["body"] for c in comments.json()["items"]] == [text for _, text in EVENTS[0]["comments"]]
