"""Who is told what, through the API of the services whose events cause it: members of new events, attendees of
changes, cancellations, waitlist and promotion and comments, leaders of join requests, requesters of decisions,
members of announcements and deletion; nobody of their own action; email per preferences, in-app always."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gatherly.notifications import service
from gatherly.notifications.domain import DEFAULT_REMINDER_HOURS, Kind, Preferences, UserId
from gatherly.notifications.store import DueReminder, unit_of_work

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.NotificationsApi: one whole Gatherly per module and database backend.


async def test_members_hear_of_a_new_event_and_the_organizer_does_not(api: Any) -> None:
    olga, ann, bob = await api.person("Olga"), await api.person("Ann"), await api.person("Bob")
    group_id = await api.group(olga, ann, bob, name="Hill Runners")
    event = await api.schedule(olga, group_id, title="Hill sprint")

    for member in (ann, bob):
        inbox = await api.inbox(member)
        [item] = [i for i in inbox["items"] if i["kind"] == "event_scheduled"]
        assert item["title"] == "New event: Hill sprint"
        assert "Hill Runners meets on" in item["body"] and "Tiergarten" in item["body"]
        assert item["link"] == f"/events/{event['id']}"
        assert item["read_at"] is None
        assert inbox["unread_count"] >= 1
        mail = await api.wait_for_mail(member, "New event: Hill sprint")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/api/notifications/unsubscribe?" in mail["List-Unsubscribe"]
    assert "event_scheduled" not in await api.kinds(olga)


async def test_attendees_hear_what_changed_and_of_the_cancellation_but_not_the_leader(api: Any) -> None:
    olga, ann, bob = await api.person("Olga"), await api.person("Ann"), await api.person("Bob")
    group_id = await api.group(olga, ann, bob)
    event = await api.schedule(olga, group_id, title="Lake swim")
    await api.rsvp(ann, event["id"])

    later = (datetime.now(UTC) + timedelta(days=8)).replace(microsecond=0)
    changed = await api.client.patch(
        f"/api/events/{event['id']}",
        json={"starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=2)).isoformat()},
        headers=olga.auth,
    )
    assert changed.status_code == 200, changed.text
    await api.running.settle()
    [update] = [i for i in (await api.inbox(ann))["items"] if i["kind"] == "event_updated"]
    assert update["title"] == "Changed: Lake swim"
    assert "changed the end time and the time" in update["body"]
    assert "event_updated" not in await api.kinds(bob), "Bob is not going"

    cancelled = await api.client.post(f"/api/events/{event['id']}/cancel", headers=olga.auth)
    assert cancelled.status_code == 200, cancelled.text
    await api.running.settle()
    assert "event_cancelled" in await api.kinds(ann)
    assert "event_cancelled" not in await api.kinds(bob)
    assert "event_cancelled" not in await api.kinds(olga)


async def test_rsvps_are_answered_and_a_promotion_is_told(api: Any) -> None:
    olga, ann, bob = await api.person("Olga"), await api.person("Ann"), await api.person("Bob")
    group_id = await api.group(olga, ann, bob)
    event = await api.schedule(olga, group_id, title="Tiny dinner", capacity=1)
    await api.rsvp(ann, event["id"])
    assert (await api.rsvp(bob, event["id"]))["status"] == "waitlisted"
    assert "rsvp_confirmed" in await api.kinds(ann)
    [waiting] = [i for i in (await api.inbox(bob))["items"] if i["kind"] == "rsvp_waitlisted"]
    assert "number 1 on the waitlist" in waiting["body"]

    await api.rsvp(ann, event["id"], "no")
    assert "rsvp_promoted" in await api.kinds(bob)


async def test_a_comment_reaches_the_people_going_but_not_its_author_and_is_not_emailed(
    api: Any,
) -> None:
    olga, ann, bob, cat = [await api.person(n) for n in ("Olga", "Ann", "Bob", "Cat")]
    group_id = await api.group(olga, ann, bob, cat)
    event = await api.schedule(olga, group_id, title="Picnic")
    await api.rsvp(ann, event["id"])
    await api.rsvp(bob, event["id"])
    posted = await api.client.post(
        f"/api/events/{event['id']}/comments", json={"body": "I bring the cake"}, headers=ann.auth
    )
    assert posted.status_code == 201, posted.text
    await api.running.settle()

    [comment] = [i for i in (await api.inbox(bob))["items"] if i["kind"] == "comment_posted"]
    assert comment["body"] == "I bring the cake"
    assert "comment_posted" not in await api.kinds(ann)
    assert "comment_posted" not in await api.kinds(cat), "Cat is not going"
    # Email is off by default for comments: Bob's mail has the new event and his RSVP, not the comment.
    await api.wait_for_mail(bob, "You're going")
    assert not [m for m in api.mail(bob) if "comment" in str(m["Subject"]).lower()]


async def test_leaders_hear_of_join_requests_and_requesters_of_the_decision(api: Any) -> None:
    olga, ann, bob = await api.person("Olga"), await api.person("Ann"), await api.person("Bob")
    created = await api.client.post(
        "/api/groups", json={"name": "Chess Club", "join_policy": "approval"}, headers=olga.auth
    )
    group_id = created.json()["id"]
    for person in (ann, bob):
        asked = await api.client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=person.auth)
        assert asked.json()["status"] == "pending"
    await api.running.settle()
    assert (await api.kinds(olga)).count("join_requested") == 2

    approved = await api.client.post(f"/api/groups/{group_id}/requests/{ann.user_id}/approve", headers=olga.auth)
    denied = await api.client.post(f"/api/groups/{group_id}/requests/{bob.user_id}/deny", headers=olga.auth)
    assert approved.status_code == denied.status_code == 200
    assert "join_approved" in await api.kinds(ann)
    assert "join_denied" in await api.kinds(bob)
    assert "join_requested" not in await api.kinds(ann)


async def test_announcements_and_the_deletion_reach_the_members_but_not_the_organizer(api: Any) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    group_id = await api.group(olga, ann, name="Book Club")
    sent = await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "New venue", "body": "We move."}, headers=olga.auth
    )
    assert sent.status_code == 202, sent.text
    await api.running.settle()
    [news] = [i for i in (await api.inbox(ann))["items"] if i["kind"] == "group_announcement"]
    assert (news["title"], news["body"]) == ("Book Club: New venue", "We move.")
    await api.wait_for_mail(ann, "Book Club: New venue")

    deleted = await api.client.delete(f"/api/groups/{group_id}", headers=olga.auth)
    assert deleted.status_code == 202
    await api.running.settle()
    assert "group_deleted" in await api.kinds(ann)
    assert not {"group_announcement", "group_deleted"} & set(await api.kinds(olga))


async def test_email_off_for_a_kind_keeps_it_in_app_only(api: Any) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    put = await api.client.put(
        "/api/notifications/preferences", json={"email": {"event_scheduled": False}}, headers=ann.auth
    )
    assert put.status_code == 200, put.text
    group_id = await api.group(olga, ann)
    await api.schedule(olga, group_id, title="Quiet walk")
    await api.schedule(olga, group_id, title="Loud walk")
    assert (await api.kinds(ann)).count("event_scheduled") == 2
    # A later email (the RSVP answer) arrives; none about the new events came before it.
    event = await api.schedule(olga, group_id, title="Third walk")
    await api.rsvp(ann, event["id"])
    await api.wait_for_mail(ann, "You're going")
    assert not [m for m in api.mail(ann) if "New event" in str(m["Subject"])]


async def test_one_persons_single_read_agrees_with_the_general_reads(api: Any) -> None:
    # The rsvp.* handler reads its one person and event in one statement (service.at_event); it must find what
    # `people`, the push subscriptions' read, the event's read and the reminders' read find, for each kind of person
    # (plain, with preferences and a subscription, deleted, not known to the service at all) and of event (kept, with
    # reminders pending for some and sent for another, and not known).
    olga = await api.person("Olga")
    plain, choosy, gone = await api.person("Pat"), await api.person("Chris"), await api.person("Gil")
    group_id = await api.group(olga, plain, choosy, gone)
    kept = await api.schedule(olga, group_id, title="Read check")
    await api.rsvp(plain, kept["id"])  # the default reminders, pending
    await api.rsvp(choosy, kept["id"])
    await api.running.settle()
    now = datetime.now(UTC)
    context = api.running.process.host("notifications").context
    async with unit_of_work(context) as uow:
        await uow.preferences.put(choosy.user_id, Preferences({Kind.RSVP_CONFIRMED: False}, {}, (2,)), now)
        await uow.push.put(choosy.user_id, "https://push.example.org/chris", "key", "auth", now)
        await uow.recipients.forget(gone.user_id, now)
        # One of choosy's reminders (the defaults when they answered) sent, the other still pending.
        await uow.reminders.mark_sent(DueReminder(kept["id"], choosy.user_id, DEFAULT_REMINDER_HOURS[0]), now)
    unknown = UserId("never-registered")
    people = (UserId(plain.user_id), UserId(choosy.user_id), UserId(gone.user_id), unknown, UserId(olga.user_id))
    async with unit_of_work(context) as uow:
        schedule = await uow.reminders.of(kept["id"])
        pending = {(kept["id"], user_id) for user_id, _, _, sent_at in schedule if sent_at is None}
        assert pending == {(kept["id"], plain.user_id), (kept["id"], choosy.user_id)}
        assert [sent_at is None for user_id, _, _, sent_at in schedule if user_id == choosy.user_id].count(False) == 1
        for event_id in (kept["id"], "never-scheduled"):
            for who in people:
                single, general = await service.at_event(uow, who, event_id), await service.people(uow, [who])
                assert (single.told.known, single.told.chosen) == (general.known, general.chosen)
                if single.told.subscribed is not None:
                    assert single.told.subscribed == await uow.push.subscribed([who])
                assert single.event == await uow.events.get(event_id)
                assert single.reminders_pending == ((event_id, who) in pending)
        assert (await service.at_event(uow, UserId(choosy.user_id), kept["id"])).told.subscribed == {choosy.user_id}
        assert (await service.at_event(uow, UserId(plain.user_id), kept["id"])).told.subscribed == frozenset()
        assert (await service.at_event(uow, UserId(gone.user_id), kept["id"])).told.known[UserId(gone.user_id)].deleted
        assert (await service.at_event(uow, unknown, kept["id"])).told.known == {}
        assert (await service.at_event(uow, unknown, kept["id"])).event is not None
