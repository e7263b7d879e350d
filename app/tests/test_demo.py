"""`gatherly up` starts with demo data that obeys the same rules as real data, loaded once."""

from __future__ import annotations

from pathlib import Path

from gatherly.app.demo import DEMO_PASSWORD, GROUPS, PEOPLE
from gatherly.app.testing import running_gatherly


async def test_the_demo_people_can_log_in_and_the_demo_groups_are_listed(tmp_path: Path) -> None:
    async with running_gatherly(tmp_path, demo=True) as gatherly:
        login = await gatherly.client.post(
            "/api/auth/login", json={"email": PEOPLE[0].email, "password": DEMO_PASSWORD}
        )
        assert login.status_code == 200
        listed = await gatherly.client.get("/api/groups", params={"limit": 100})
        assert listed.status_code == 200
        names = {group["name"] for group in listed.json()["items"]}
        assert {spec["name"] for spec in GROUPS} <= names
    # A second start on the same data loads nothing twice.
    async with running_gatherly(tmp_path, demo=True) as gatherly:
        listed = await gatherly.client.get("/api/groups", params={"limit": 100})
        names = [group["name"] for group in listed.json()["items"]]
        assert names.count(GROUPS[0]["name"]) == 1
