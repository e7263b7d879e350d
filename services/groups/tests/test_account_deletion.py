"""The groups step of the account-deletion saga (`user.deleted` → `user_deletion.step_done`): memberships, join
requests and bans of the person end with the usual events, a group that loses its last organizer gets a new one or
is deleted through its own saga, and all of it commits with the reply or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from gatherly.app.testing import Person, sign_up
from gatherly.contracts.users import UserDeleted
from gatherly.groups.domain import DeletionStatus
from gatherly.groups.store import KnownPeopleStore
from gatherly.groups.tables import bans, join_requests, known_people, memberships
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Users (who deletes the account and publishes user.deleted) and groups: nobody else replies, so the saga in the
# users service stays pending here; services/users/tests/test_account_deletion.py and tests/api run the whole saga.
SERVICES = ("users", "groups")


async def _newcomer(api: Any, name: str) -> Person:
    """A person of this test alone (people deleted here must not be the module's shared ones)."""
    return await sign_up(api.running, display_name=name)


async def _delete_account(api: Any, person: Person) -> str:
    response = await api.client.delete("/api/users/me", headers=person.auth)
    assert response.status_code == 202, response.text
    await api.running.settle()
    deletion_id: str = response.json()["deletion_id"]
    return deletion_id


async def _replies(api: Any, person: Person) -> list[Envelope]:
    return [e for e in await api.published("user_deletion", person.user_id) if e.type == "user_deletion.step_done"]


async def _membership_events(api: Any, group_id: str, person: Person) -> list[tuple[str, str]]:
    events = await api.published("membership", group_id)
    return [(e.type, e.payload.get("role", "")) for e in events if e.payload["user_id"] == person.user_id]


async def _rows_of(api: Any, table: Any, person: Person) -> int:
    async with api.stores() as stores:
        query = select(func.count()).select_from(table).where(table.c.user_id == person.user_id)
        return int(await stores.groups.session.scalar(query) or 0)


NOTHING = {
    "memberships": 0,
    "join_requests": 0,
    "bans": 0,
    "organizers_succeeded": 0,
    "groups_deleted": 0,
    "invitations_redacted": 0,
}


async def test_memberships_requests_and_bans_end_with_their_events_and_one_reply(shared_api: Any) -> None:
    api = shared_api
    ann, bob = await api.people("Ann", "Bob")
    zed = await _newcomer(api, "Zed Member")
    hikers = await api.create(ann, name="Deletion Hikers")
    await api.join(bob, hikers["id"])
    await api.join(zed, hikers["id"])
    askers = await api.create(ann, name="Deletion Askers", join_policy="approval")
    assert await api.join(zed, askers["id"]) == "pending"
    banning = await api.create(ann, name="Deletion Banning")
    await api.join(zed, banning["id"])
    await api.ban(ann, banning["id"], zed)
    assert (await api.get(hikers["id"]))["member_count"] == 3

    deletion_id = await _delete_account(api, zed)

    group = await api.get(hikers["id"])
    assert group["member_count"] == 2
    assert [m["user_id"] for m in await api.members(hikers["id"])] == [ann.user_id, bob.user_id]
    assert (await _membership_events(api, hikers["id"], zed))[-1] == ("membership.left", "member")
    asked = [e for e in await api.published("join_request", askers["id"]) if e.payload["user_id"] == zed.user_id]
    assert [e.type for e in asked] == ["join_request.created", "join_request.withdrawn"]
    for table in (memberships, join_requests, bans, known_people):
        assert await _rows_of(api, table, zed) == 0, table.name
    lifted = [e for e in await api.published("membership", banning["id"]) if e.type == "membership.ban_lifted"]
    assert [(e.payload["user_id"], e.payload["lifted_by"]) for e in lifted] == [(zed.user_id, zed.user_id)]
    [reply] = await _replies(api, zed)
    assert reply.payload["deletion_id"] == deletion_id and reply.payload["service"] == "groups"
    assert reply.payload["what"] == {**NOTHING, "memberships": 1, "join_requests": 1, "bans": 1}

    # The same message again (a redelivery): nothing is left to end, no membership event is repeated, and the
    # second reply is one the saga counts once.
    again = UserDeleted(user_id=zed.user_id, deleted_at=datetime.now(UTC), deletion_id=deletion_id)
    await api.deliver(again)
    assert (await api.get(hikers["id"]))["member_count"] == 2
    assert [t for t, _ in await _membership_events(api, hikers["id"], zed)].count("membership.left") == 1
    assert [r.payload["what"] for r in await _replies(api, zed)][-1] == NOTHING


async def test_the_longest_standing_co_organizer_succeeds_the_last_organizer(shared_api: Any) -> None:
    api = shared_api
    zed = await _newcomer(api, "Zed Organizer")
    early, first_co, second_co = await api.people("Early Member", "First Co", "Second Co")
    group = await api.create(zed, name="Succession by co-organizer")
    for person in (early, first_co, second_co):
        await api.join(person, group["id"])
    # Made co-organizers in the opposite order from joining: standing counts from joining, not from the role.
    await api.set_role(zed, group["id"], second_co, "co_organizer")
    await api.set_role(zed, group["id"], first_co, "co_organizer")

    await _delete_account(api, zed)

    roles = {m["user_id"]: m["role"] for m in await api.members(group["id"])}
    assert roles == {first_co.user_id: "organizer", second_co.user_id: "co_organizer", early.user_id: "member"}
    assert (await api.get(group["id"]))["member_count"] == 3
    changed = [e for e in await api.published("membership", group["id"]) if e.type == "membership.role_changed"]
    assert (changed[-1].payload["user_id"], changed[-1].payload["previous_role"], changed[-1].payload["role"]) == (
        first_co.user_id,
        "co_organizer",
        "organizer",
    )
    assert changed[-1].payload["changed_by"] == zed.user_id
    assert (await _membership_events(api, group["id"], zed))[-1] == ("membership.left", "organizer")
    [reply] = await _replies(api, zed)
    assert reply.payload["what"] == {**NOTHING, "memberships": 1, "organizers_succeeded": 1}


async def test_without_a_co_organizer_the_longest_standing_member_succeeds(shared_api: Any) -> None:
    api = shared_api
    zed = await _newcomer(api, "Zed Founder")
    first, later = await api.people("First Joiner", "Later Leader")
    group = await api.create(zed, name="Succession by member")
    await api.join(first, group["id"])
    await api.join(later, group["id"])
    await api.set_role(zed, group["id"], later, "event_organizer")

    await _delete_account(api, zed)

    roles = {m["user_id"]: m["role"] for m in await api.members(group["id"])}
    assert roles == {first.user_id: "organizer", later.user_id: "event_organizer"}


async def test_an_organizer_who_is_not_the_last_one_just_leaves(shared_api: Any) -> None:
    api = shared_api
    ann = await api.person("Ann")
    zed = await _newcomer(api, "Zed Second Organizer")
    group = await api.create(ann, name="Two organizers")
    await api.join(zed, group["id"])
    await api.set_role(ann, group["id"], zed, "organizer")

    await _delete_account(api, zed)

    assert {m["user_id"]: m["role"] for m in await api.members(group["id"])} == {ann.user_id: "organizer"}
    assert [t for t, _ in await _membership_events(api, group["id"], zed)][-1] == "membership.left"
    [reply] = await _replies(api, zed)
    assert reply.payload["what"] == {**NOTHING, "memberships": 1}


async def test_a_group_nobody_else_belongs_to_is_deleted_through_its_saga(shared_api: Any) -> None:
    api = shared_api
    zed = await _newcomer(api, "Zed Alone")
    waiting = await api.person("Waiting Person")
    group = await api.create(zed, name="Lonely group", join_policy="approval")
    await api.join(waiting, group["id"])

    await _delete_account(api, zed)

    assert (await api.client.get(f"/api/groups/{group['id']}")).status_code == 404
    deleted = (await api.published("group", group["id"]))[-1]
    assert deleted.type == "group.deleted"
    assert (deleted.payload["deleted_by"], deleted.payload["member_ids"], deleted.payload["requester_ids"]) == (
        zed.user_id,
        [],  # nobody to tell: the deleted person is no member any more
        [waiting.user_id],
    )
    async with api.stores() as stores:
        saga = await stores.deletions.get(group["id"])
    assert saga is not None and saga.status is DeletionStatus.PENDING  # waiting for the events service, as usual
    [reply] = await _replies(api, zed)
    assert reply.payload["what"] == {**NOTHING, "memberships": 1, "groups_deleted": 1}


async def test_an_old_message_without_a_deletion_id_erases_the_same_but_replies_to_nobody(shared_api: Any) -> None:
    api = shared_api
    ann = await api.person("Ann")
    zed = await _newcomer(api, "Zed Old Message")
    group = await api.create(ann, name="Old message group")
    await api.join(zed, group["id"])

    await api.deliver(UserDeleted(user_id=zed.user_id, deleted_at=datetime.now(UTC)))

    assert [m["user_id"] for m in await api.members(group["id"])] == [ann.user_id]
    assert (await api.get(group["id"]))["member_count"] == 1
    assert await _replies(api, zed) == []


async def test_the_erasure_and_the_reply_commit_together_or_not_at_all(
    shared_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = shared_api
    ann = await api.person("Ann")
    zed = await _newcomer(api, "Zed Failing")
    group = await api.create(ann, name="Failing erasure group")
    await api.join(zed, group["id"])

    async def broken(self: KnownPeopleStore, user_id: str) -> None:
        raise RuntimeError("the database refused the last statement")

    # The last statement before the reply fails every time: the message is retried, then parked.
    monkeypatch.setattr(KnownPeopleStore, "forget", broken)
    await _delete_account(api, zed)

    assert [m["user_id"] for m in await api.members(group["id"])] == [ann.user_id, zed.user_id]
    assert (await api.get(group["id"]))["member_count"] == 2
    assert [t for t, _ in await _membership_events(api, group["id"], zed)] == ["membership.joined"]
    assert await _replies(api, zed) == []
    parked = await api.running.process.platform.log.read("user.dlq", limit=1000)
    assert any(Envelope.from_record(r).aggregate_id == zed.user_id for r in parked)


async def test_a_deleted_account_with_a_token_still_valid_can_neither_found_nor_join_a_group(shared_api: Any) -> None:
    api = shared_api
    ann = await api.person("Ann")
    zed = await _newcomer(api, "Zed Still Holding A Token")
    group = await api.create(ann, name="Joined after deletion?")

    await _delete_account(api, zed)

    founded = await api.client.post("/api/groups", json={"name": "Ghost group"}, headers=zed.auth)
    joined = await api.client.post(f"/api/groups/{group['id']}/join", json={}, headers=zed.auth)
    for response in (founded, joined):
        assert (response.status_code, response.headers["content-type"]) == (401, "application/problem+json")
        # The kernel refuses a revoked subject first; the groups service's own check stands behind it.
        assert response.json()["title"] in ("Authentication required", "Account deleted")
    assert [m["user_id"] for m in await api.members(group["id"])] == [ann.user_id]
    mine = await api.client.get("/api/groups", params={"q": "Ghost group"})
    assert mine.json()["items"] == []
