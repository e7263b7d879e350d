"""Cover images through HTTP: a leader chooses as cover an event-cover image they uploaded once the images service
reported it ready (image.ready on the log, as that service publishes it); it shows while its uploader leads the
group, and goes when the image is deleted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_events

from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import ImageVariants

EventsApi = Any  # the `api` fixture of conftest.py

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _variants(name: str) -> ImageVariants:
    return ImageVariants(thumb=f"/media/{name}/thumb", medium=f"/media/{name}/medium", large=f"/media/{name}/large")


async def _ready(api: EventsApi, owner_id: str, purpose: str = "event_cover", name: str = "c") -> str:
    image_id = str(uuid.uuid4())
    ready = ImageReady(
        image_id=image_id, owner_id=owner_id, purpose=purpose, variants=_variants(name), ready_at=datetime.now(UTC)
    )
    await api.deliver(ready)
    return image_id


async def test_a_leaders_ready_cover_shows_on_the_event(api: EventsApi) -> None:
    olga, member = await api.people("Cover Olga", "Cover Member")
    group_id = await api.group(olga, members={member: "member"})
    cover_id = await _ready(api, olga.user_id, name="olga")
    event = await api.schedule(olga, group_id, cover_image_id=cover_id)
    assert (event["cover_image_id"], event["cover"]) == (cover_id, _variants("olga").model_dump())
    assert (await api.get(event["id"], member))["cover"] == _variants("olga").model_dump()
    # Deleted at the images service: the event shows no cover any more.
    await api.deliver(ImageDeleted(image_id=cover_id, owner_id=olga.user_id))
    assert (await api.get(event["id"]))["cover"] is None


async def test_a_cover_that_is_not_ready_or_not_a_cover_is_refused_with_409(api: EventsApi) -> None:
    olga = await api.person("Cover Olga 2")
    group_id = await api.group(olga)
    avatar_id = await _ready(api, olga.user_id, purpose="avatar")
    for image_id in (str(uuid.uuid4()), avatar_id):  # never reported ready / ready, but as an avatar
        response = await api.client.post(
            "/api/events", json=api.event_body(group_id, cover_image_id=image_id), headers=olga.auth
        )
        assert response.status_code == 409, response.text
        assert "event_cover" in response.json()["detail"]


async def test_someone_elses_or_a_malformed_image_id_is_refused_with_422(api: EventsApi) -> None:
    olga, bob = await api.people("Cover Olga 3", "Cover Bob")
    group_id = await api.group(olga, members={bob: "co_organizer"})
    bobs_cover = await _ready(api, bob.user_id)
    for image_id in (bobs_cover, "not-a-uuid", "../../etc/passwd"):
        response = await api.client.post(
            "/api/events", json=api.event_body(group_id, cover_image_id=image_id), headers=olga.auth
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "cover_image_id"
    event = await api.schedule(olga, group_id)
    patch = {"cover_image_id": bobs_cover}
    response = await api.client.patch(f"/api/events/{event['id']}", json=patch, headers=olga.auth)
    assert response.status_code == 422, response.text
    assert (await api.get(event["id"]))["cover_image_id"] is None


async def test_a_cover_is_set_and_cleared_by_patch_and_shows_while_its_uploader_leads(api: EventsApi) -> None:
    olga, cleo = await api.people("Cover Olga 4", "Cover Cleo")
    group_id = await api.group(olga, members={cleo: "event_organizer"})
    event = await api.schedule(olga, group_id)
    cleos_cover = await _ready(api, cleo.user_id, name="cleo")
    patch = f"/api/events/{event['id']}"
    response = await api.client.patch(patch, json={"cover_image_id": cleos_cover}, headers=cleo.auth)
    assert response.status_code == 200, response.text
    assert response.json()["cover"] == _variants("cleo").model_dump()
    # Cleo is no leader any more: her image no longer shows (the id stays), and shows again once she leads again.
    role = f"/api/groups/{group_id}/members/{cleo.user_id}/role"
    for new_role, shown_cover in (("member", None), ("co_organizer", _variants("cleo").model_dump())):
        changed = await api.client.put(role, json={"role": new_role}, headers=olga.auth)
        assert changed.status_code == 200, changed.text
        await api.running.settle()
        shown = await api.get(event["id"])
        assert (shown["cover_image_id"], shown["cover"]) == (cleos_cover, shown_cover)
    # Another leader's edit of other fields keeps the chosen image without re-checking it.
    response = await api.client.patch(patch, json={"title": "Renamed"}, headers=olga.auth)
    assert response.status_code == 200, response.text
    response = await api.client.patch(patch, json={"cover_image_id": None}, headers=olga.auth)
    assert response.status_code == 200, response.text
    assert (response.json()["cover_image_id"], response.json()["cover"]) == (None, None)


@contextmanager
def cover_lookups(api: EventsApi) -> Iterator[list[str]]:
    """The statements the events service runs on the covers' read model meanwhile."""
    engine = api.running.process.host("events").context.db.engine.sync_engine
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "cover_images" in statement:
            seen.append(statement)

    sqlalchemy_events.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy_events.remove(engine, "before_cursor_execute", record)


async def test_search_results_carry_the_covers_that_show_read_in_one_query_per_page(api: EventsApi) -> None:
    olga, cleo, member = await api.people("Cover Olga 5", "Cover Cleo 5", "Cover Member 5")
    group_id = await api.group(olga, members={cleo: "event_organizer", member: "member"})
    olgas, cleos = await _ready(api, olga.user_id, name="olga5"), await _ready(api, cleo.user_id, name="cleo5")
    with_olgas = [await api.schedule(olga, group_id, title=f"Olga's {n}", cover_image_id=olgas) for n in range(5)]
    with_cleos = await api.schedule(cleo, group_id, title="Cleo's", cover_image_id=cleos)
    without = await api.schedule(olga, group_id, title="No cover")
    # Cleo steps down: her image no longer shows (as on the event itself).
    changed = await api.client.put(
        f"/api/groups/{group_id}/members/{cleo.user_id}/role", json={"role": "member"}, headers=olga.auth
    )
    assert changed.status_code == 200, changed.text
    await api.running.settle()
    expected = {e["id"]: _variants("olga5").model_dump() for e in with_olgas} | {
        with_cleos["id"]: None,
        without["id"]: None,
    }

    for params in ({"group_id": group_id}, {"group_id": group_id, "near": "52.514,13.35", "radius_km": 5}):
        for limit in (2, 7):  # a bigger page does not read the covers more often
            with cover_lookups(api) as lookups:
                response = await api.client.get("/api/events", params={**params, "limit": limit}, headers=member.auth)
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            assert len(items) == limit
            assert {item["id"]: item["cover"] for item in items} == {item["id"]: expected[item["id"]] for item in items}
            assert len(lookups) == 1, lookups
    # An event's own cover is read the same way.
    assert (await api.get(with_cleos["id"], member))["cover"] is None
    assert (await api.get(with_olgas[0]["id"], member))["cover"] == _variants("olga5").model_dump()
