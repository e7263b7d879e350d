"""DELETE /api/groups/{id}: the groups service's part of the group-deletion saga — what ends at once, the saga
state it persists, the events service's reply that completes it, and the deadline that fails it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from gatherly.contracts.groups import GroupEventsCancelled
from gatherly.groups import service
from gatherly.groups.domain import DELETION_TIMEOUT, DeletionStatus, DeletionStep, GroupId
from gatherly.groups.store import GroupsUnitOfWork
from gatherly.groups.tables import bans, invitations, join_requests, known_people, memberships
from gatherly.kernel.clock import FrozenClock

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The groups side of the saga alone: without the events service nobody replies to group.deleted, so these tests
# decide when (and whether) the reply comes. services/events/tests/test_group_deletion.py runs the whole saga.
SERVICES = ("users", "groups")


async def _delete(api: Any, group: dict[str, Any], organizer: Any) -> dict[str, Any]:
    response = await api.client.delete(f"/api/groups/{group['id']}", headers=organizer.auth)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def _rows(api: Any, table: Any, group_id: str) -> int:
    async with api.stores() as stores:
        query = select(func.count()).select_from(table).where(table.c.group_id == group_id)
        return int(await stores.groups.session.scalar(query) or 0)


async def test_deleting_a_group_ends_its_memberships_requests_and_bans_and_starts_the_saga(shared_api: Any) -> None:
    ann, bob, cat, dan = await shared_api.people("Ann", "Bob", "Cat", "Dan")
    group = await shared_api.create(ann, name="Ending Group", join_policy="approval")
    await shared_api.join(bob, group["id"])
    await shared_api.approve(ann, group["id"], bob)
    await shared_api.join(cat, group["id"])  # still pending when the group goes
    await shared_api.join(dan, group["id"])
    await shared_api.ban(ann, group["id"], dan)
    invited = await shared_api.client.post(f"/api/groups/{group['id']}/invitations", json={}, headers=ann.auth)
    assert invited.status_code == 201

    body = await _delete(shared_api, group, ann)
    assert (body["id"], body["status"], body["deletion"]) == (group["id"], "deleted", "pending")

    for table in (memberships, join_requests, bans, invitations, known_people):
        assert await _rows(shared_api, table, group["id"]) == 0, table.name
    # Bob's group is gone from his groups, and nobody is left to manage it.
    mine = await shared_api.client.get("/api/groups", params={"member": "me"}, headers=bob.auth)
    assert group["id"] not in [g["id"] for g in mine.json()["items"]]

    deleted = (await shared_api.published("group", group["id"]))[-1]
    assert deleted.type == "group.deleted"
    assert sorted(deleted.payload["member_ids"]) == sorted([ann.user_id, bob.user_id])
    assert deleted.payload["requester_ids"] == [cat.user_id]
    # Their memberships and requests end with the group: no one-by-one events for the read models to misread.
    assert [e.type for e in await shared_api.published("membership", group["id"])][-1] == "membership.joined"
    requests = await shared_api.published("join_request", group["id"])
    assert [e.type for e in requests if e.payload["user_id"] == cat.user_id] == ["join_request.created"]

    async with shared_api.stores() as stores:
        deletion = await stores.deletions.get(group["id"])
    assert deletion is not None
    assert (deletion.status, deletion.step) == (DeletionStatus.PENDING, DeletionStep.CANCEL_EVENTS)
    deleted_at = datetime.fromisoformat(deleted.payload["deleted_at"])
    assert deletion.deadline_at == deleted_at + DELETION_TIMEOUT

    # A group is deleted once: the second call finds no group.
    assert (await shared_api.client.delete(f"/api/groups/{group['id']}", headers=ann.auth)).status_code == 404


async def test_the_events_services_reply_completes_the_saga(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    group = await shared_api.create(ann, name="Completed Group")
    await _delete(shared_api, group, ann)

    reply = GroupEventsCancelled(group_id=group["id"], cancelled_event_ids=["e1"], cancelled_at=datetime.now(UTC))
    await shared_api.deliver(reply)
    async with shared_api.stores() as stores:
        deletion = await stores.deletions.get(group["id"])
    assert deletion is not None
    assert (deletion.status, deletion.step, deletion.reason) == (DeletionStatus.COMPLETED, DeletionStep.DONE, None)

    # A reply delivered twice, or for a group this service never deleted, changes nothing and parks nothing.
    await shared_api.deliver(reply, GroupEventsCancelled(group_id="no-such-group", cancelled_at=datetime.now(UTC)))
    async with shared_api.stores() as stores:
        assert (await stores.deletions.get(group["id"])) == deletion
        assert await stores.deletions.get("no-such-group") is None


async def test_a_saga_without_a_reply_fails_at_its_deadline_and_a_late_reply_still_completes_it(
    shared_api: Any,
) -> None:
    ann = await shared_api.person("Ann")
    group = await shared_api.create(ann, name="Stuck Group")
    await _delete(shared_api, group, ann)
    context = shared_api.running.process.host("groups").context

    def at(when: datetime) -> GroupsUnitOfWork:
        return GroupsUnitOfWork(context.db, clock=FrozenClock(when), signal=context.signal)

    async with shared_api.stores() as stores:
        deadline = (await stores.deletions.get(group["id"])).deadline_at
    before = await service.fail_overdue_deletions(at(deadline - timedelta(seconds=1)))
    assert group["id"] not in [d.group_id for d in before]

    failed = await service.fail_overdue_deletions(at(deadline + timedelta(seconds=1)))
    [mine] = [d for d in failed if d.group_id == GroupId(group["id"])]
    assert (mine.status, mine.step) == (DeletionStatus.FAILED, DeletionStep.CANCEL_EVENTS)
    assert mine.reason and "cancel_events" in mine.reason
    async with shared_api.stores() as stores:
        assert await stores.deletions.get(group["id"]) == mine
    # Failed once is failed: a later check does not count it again.
    later = await service.fail_overdue_deletions(at(deadline + timedelta(hours=1)))
    assert group["id"] not in [d.group_id for d in later]

    await shared_api.deliver(GroupEventsCancelled(group_id=group["id"], cancelled_at=datetime.now(UTC)))
    async with shared_api.stores() as stores:
        completed = await stores.deletions.get(group["id"])
    assert completed is not None
    assert (completed.status, completed.reason) == (DeletionStatus.COMPLETED, None)


async def test_a_reply_that_commits_while_the_timeout_check_runs_keeps_the_saga_completed(shared_api: Any) -> None:
    # On PostgreSQL the reply can commit between the check's SELECT of overdue sagas and its UPDATE. Here the
    # completion is written right after that SELECT (in the same transaction, so on either database); the
    # check must not overwrite it with "failed".
    ann = await shared_api.person("Ann")
    group = await shared_api.create(ann, name="Racing Group")
    await _delete(shared_api, group, ann)
    context = shared_api.running.process.host("groups").context
    async with shared_api.stores() as stores:
        deadline = (await stores.deletions.get(group["id"])).deadline_at

    class ReplyLandsAfterTheSelect(GroupsUnitOfWork):
        def open_stores(self, session: Any) -> None:
            super().open_stores(session)
            read_overdue = self.deletions.overdue

            async def overdue(now: datetime, limit: int = 100) -> list[Any]:
                stale = await read_overdue(now, limit)
                reply = GroupEventsCancelled(group_id=group["id"], cancelled_at=now)
                await service.finish_deletion(self, reply)
                return stale

            self.deletions.overdue = overdue  # type: ignore[method-assign]

    uow = ReplyLandsAfterTheSelect(context.db, clock=FrozenClock(deadline + timedelta(seconds=1)))
    failed = await service.fail_overdue_deletions(uow)

    assert group["id"] not in [d.group_id for d in failed]
    async with shared_api.stores() as stores:
        deletion = await stores.deletions.get(group["id"])
    assert deletion is not None
    assert (deletion.status, deletion.step, deletion.reason) == (DeletionStatus.COMPLETED, DeletionStep.DONE, None)
