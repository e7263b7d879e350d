"""The groups service's copies of other services' data: people's names and avatars (from user events) and ready
banner images (from image events), as member lists and groups show them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from gatherly.contracts.base import IntegrationEvent
from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import ImageVariants, UserDeleted, UserProfileUpdated
from gatherly.groups.tables import member_profiles
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _deliver(api: Any, *events: IntegrationEvent) -> None:
    """Put events on the log as their owning service would, then wait until every consumer applied them."""
    now = datetime.now(UTC)
    await api.running.process.platform.log.publish([Envelope.wrap(event, now).to_message() for event in events])
    await api.running.settle()


def _variants(name: str) -> ImageVariants:
    return ImageVariants(thumb=f"/media/{name}/thumb", medium=f"/media/{name}/medium", large=f"/media/{name}/large")


async def test_a_new_display_name_shows_in_member_lists(shared_api: Any) -> None:
    api = shared_api
    ann, bob = await api.people("Ann", "Bob (renamed)")
    group = await api.create(ann)
    await api.join(bob, group["id"])
    await api.running.settle()
    assert [m["display_name"] for m in await api.members(group["id"])] == ["Ann", "Bob (renamed)"]

    response = await api.client.patch("/api/users/me", json={"display_name": "Robert"}, headers=bob.auth)
    assert response.status_code == 200, response.text
    await api.running.settle()
    assert [m["display_name"] for m in await api.members(group["id"])] == ["Ann", "Robert"]


async def test_an_older_profile_never_overwrites_a_newer_one_and_deletion_is_final(shared_api: Any) -> None:
    api = shared_api
    ann, bob = await api.people("Ann", "Bob (deleted)")
    group = await api.create(ann)
    await api.join(bob, group["id"])
    avatar = _variants("bob")
    newer = datetime.now(UTC) + timedelta(hours=1)
    profile = {"user_id": bob.user_id, "email": bob.email}
    await _deliver(
        api,
        UserProfileUpdated(**profile, display_name="Bobby", avatar=avatar, updated_at=newer),
        UserProfileUpdated(**profile, display_name="Stale Bob", updated_at=newer - timedelta(minutes=5)),
    )
    [_, shown] = await api.members(group["id"])
    assert (shown["display_name"], shown["avatar"]) == ("Bobby", avatar.model_dump())

    later = newer + timedelta(hours=1)
    await _deliver(
        api,
        UserDeleted(user_id=bob.user_id, deleted_at=later),
        UserProfileUpdated(**profile, display_name="Ghost", updated_at=later + timedelta(minutes=1)),
    )
    # The deletion ends Bob's membership too (test_account_deletion.py); his profile stays blank, the later
    # update notwithstanding.
    assert [m["user_id"] for m in await api.members(group["id"])] == [ann.user_id]
    async with api.stores() as stores:
        query = select(member_profiles.c.display_name, member_profiles.c.avatar)
        row = (await stores.groups.session.execute(query.where(member_profiles.c.user_id == bob.user_id))).one()
    assert tuple(row) == (None, None)


async def test_members_whose_profile_has_not_arrived_are_listed_without_a_name(shared_api: Any) -> None:
    api = shared_api
    ann, bob = await api.people("Ann", "Bob (not arrived)")
    group = await api.create(ann)
    await api.join(bob, group["id"])
    await api.running.settle()
    async with api.running.process.host("groups").context.db.writing() as session:
        await session.execute(delete(member_profiles).where(member_profiles.c.user_id == bob.user_id))
    members = await api.members(group["id"])
    assert [(m["user_id"], m["display_name"]) for m in members] == [(ann.user_id, "Ann"), (bob.user_id, None)]


async def test_the_banner_shows_once_a_leaders_image_is_ready(shared_api: Any) -> None:
    api = shared_api
    ann, bob = await api.people("Ann", "Bob")
    group = await api.create(ann)
    await api.join(bob, group["id"])
    banner_id, bobs_id = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    patch = f"/api/groups/{group['id']}"

    response = await api.client.patch(patch, json={"banner_image_id": banner_id}, headers=ann.auth)
    assert response.status_code == 200
    assert (response.json()["banner_image_id"], response.json()["banner"]) == (banner_id, None)  # not ready yet

    ready = {"purpose": "group_banner", "ready_at": datetime.now(UTC)}
    await _deliver(
        api,
        ImageReady(image_id=banner_id, owner_id=ann.user_id, variants=_variants("a"), **ready),
        ImageReady(image_id=bobs_id, owner_id=bob.user_id, variants=_variants("b"), **ready),
    )
    assert (await api.get(group["id"]))["banner"] == _variants("a").model_dump()
    [listed] = [g for g in (await api.client.get("/api/groups")).json()["items"] if g["id"] == group["id"]]
    assert listed["banner"] == _variants("a").model_dump()

    # An image of someone who is no leader of the group is not shown, until they become one.
    await api.client.patch(patch, json={"banner_image_id": bobs_id}, headers=ann.auth)
    assert (await api.get(group["id"]))["banner"] is None
    await api.set_role(ann, group["id"], bob, "event_organizer")
    assert (await api.get(group["id"]))["banner"] == _variants("b").model_dump()

    await _deliver(api, ImageDeleted(image_id=bobs_id, owner_id=bob.user_id))
    assert (await api.get(group["id"]))["banner"] is None
    response = await api.client.patch(patch, json={"banner_image_id": None}, headers=ann.auth)
    assert response.json()["banner_image_id"] is None
