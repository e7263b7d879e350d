"""Each row of the Groups table of api.md, through HTTP: what it answers, what it stores, what it publishes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatherly.groups import store
from gatherly.groups.domain import details_from

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTIONS = ["Why do you want to join?", "Have you hiked before?"]


def _types(envelopes: list[Any]) -> list[str]:
    return [e.type for e in envelopes]


# --- POST /api/groups ---------------------------------------------------------------------------------------------


async def test_creating_a_group_makes_the_creator_its_organizer(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    body = {
        "name": "Berlin Hikers",
        "description": "Weekend walks",
        "topics": ["Hiking", "Outdoors"],
        "city": "Berlin",
        "location": {"lat": 52.52, "lng": 13.405},
        "visibility": "private",
        "join_policy": "approval",
        "questions": QUESTIONS,
    }
    response = await shared_api.client.post("/api/groups", json=body, headers=ann.auth)
    assert response.status_code == 201, response.text
    group = response.json()
    assert group["slug"].startswith("berlin-hikers")
    assert group["topics"] == ["hiking", "outdoors"]
    assert group["location"] == {"lat": 52.52, "lng": 13.405}
    assert (group["visibility"], group["join_policy"], group["questions"]) == ("private", "approval", QUESTIONS)
    assert group["member_count"] == 1
    assert group["banner"] is None
    assert group["my_membership"] == {"role": "organizer", "status": "member"}

    members = await shared_api.members(group["id"], ann)
    assert [(m["user_id"], m["role"]) for m in members] == [(ann.user_id, "organizer")]
    created = await shared_api.published("group", group["id"])
    assert _types(created) == ["group.created"]
    assert created[0].payload["organizer_id"] == ann.user_id
    assert created[0].payload["visibility"] == "private"
    joined = await shared_api.published("membership", group["id"])
    assert [(e.type, e.payload["user_id"], e.payload["role"]) for e in joined] == [
        ("membership.joined", ann.user_id, "organizer")
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "  "}, "name"),
        ({"name": "G", "location": {"lat": 95, "lng": 0}}, "location"),
        ({"name": "G", "visibility": "secret"}, "visibility"),
        ({"name": "G", "join_policy": "invite"}, "join_policy"),
        ({"name": "G", "topics": "hiking"}, "topics"),
        ({"name": "G", "questions": [""]}, "questions"),
    ],
)
async def test_invalid_groups_are_refused_with_the_field_named(
    shared_api: Any, body: dict[str, Any], field: str
) -> None:
    ann = await shared_api.person("Ann")
    response = await shared_api.client.post("/api/groups", json=body, headers=ann.auth)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_slugs_are_unique_and_survive_a_rename(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    first = await shared_api.create(ann, name="Slug Club")
    second = await shared_api.create(ann, name="Slug  club!")
    assert second["slug"] != first["slug"]
    assert second["slug"].startswith(first["slug"] + "-")

    renamed = await shared_api.client.patch(f"/api/groups/{first['id']}", json={"name": "Renamed"}, headers=ann.auth)
    assert renamed.status_code == 200
    assert renamed.json()["slug"] == first["slug"]
    by_slug = await shared_api.get(first["slug"])
    assert (by_slug["id"], by_slug["name"]) == (first["id"], "Renamed")


# --- GET /api/groups/{id or slug} -----------------------------------------------------------------------------------


async def test_an_unknown_group_is_404(shared_api: Any) -> None:
    for ref in ("no-such-group", "00000000-0000-4000-8000-000000000000"):
        response = await shared_api.client.get(f"/api/groups/{ref}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


# --- PATCH / DELETE /api/groups/{id} --------------------------------------------------------------------------------


async def test_the_organizer_edits_the_group(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    group = await shared_api.create(ann, city="Berlin")
    changes = {
        "description": "Now with maps",
        "topics": ["Maps"],
        "city": None,
        "location": {"lat": 48.85, "lng": 2.35},
        "join_policy": "approval",
        "questions": ["Why?"],
    }
    response = await shared_api.client.patch(f"/api/groups/{group['id']}", json=changes, headers=ann.auth)
    assert response.status_code == 200, response.text
    edited = response.json()
    assert (edited["description"], edited["topics"], edited["city"]) == ("Now with maps", ["maps"], None)
    assert (edited["join_policy"], edited["questions"]) == ("approval", ["Why?"])
    assert edited["name"] == group["name"]  # left out, left alone
    updated = (await shared_api.published("group", group["id"]))[-1]
    assert updated.type == "group.updated"
    assert updated.payload["updated_by"] == ann.user_id
    assert updated.payload["join_policy"] == "approval"


async def test_an_edit_that_leaves_the_topics_alone_keeps_the_group_listed_under_them(shared_api: Any) -> None:
    # An edit rewrites a group's topic rows only when its topics changed (store.GroupStore.save).
    ann = await shared_api.person("Ann")
    group = await shared_api.create(ann, name="Topical Walkers", topics=["Rambling", "Moors"])

    async def listed_under(topic: str) -> list[str]:
        response = await shared_api.client.get("/api/groups", params={"topic": topic})
        return [item["id"] for item in response.json()["items"]]

    for changes in ({"description": "Longer walks"}, {"topics": ["moors", "rambling"]}):
        response = await shared_api.client.patch(f"/api/groups/{group['id']}", json=changes, headers=ann.auth)
        assert response.status_code == 200, response.text
        assert (await listed_under("rambling"), await listed_under("moors")) == ([group["id"]], [group["id"]])

    response = await shared_api.client.patch(
        f"/api/groups/{group['id']}", json={"topics": ["Moors", "Fells"]}, headers=ann.auth
    )
    assert response.json()["topics"] == ["moors", "fells"]
    assert (await listed_under("rambling"), await listed_under("fells")) == ([], [group["id"]])
    assert await listed_under("moors") == [group["id"]]


async def test_an_edit_writes_every_column_of_a_groups_details() -> None:
    """An edit's UPDATE is built once with a parameter per column (store.SAVE_GROUP): the columns a group's details
    fill must be exactly those, or an edit would leave one unwritten."""
    assert set(store._detail_columns(details_from(name="Any"))) == set(store.DETAIL_COLUMNS)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name"),
        ({"visibility": None}, "visibility"),
        ({"colour": "red"}, "colour"),
        ({"name": ""}, "name"),
    ],
)
async def test_invalid_edits_are_refused(shared_api: Any, changes: dict[str, Any], field: str) -> None:
    ann = await shared_api.person("Ann")
    group = await shared_api.create(ann)
    response = await shared_api.client.patch(f"/api/groups/{group['id']}", json=changes, headers=ann.auth)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_a_deleted_group_is_gone(shared_api: Any) -> None:
    ann, bob = await shared_api.people("Ann", "Bob")
    group = await shared_api.create(ann, name="Doomed Group", topics=["doomed"])
    await shared_api.join(bob, group["id"])

    response = await shared_api.client.delete(f"/api/groups/{group['slug']}", headers=ann.auth)
    assert response.status_code == 202, response.text
    assert response.json()["id"] == group["id"]

    for path in ("", "/members", "/requests"):
        assert (await shared_api.client.get(f"/api/groups/{group['id']}{path}", headers=ann.auth)).status_code == 404
    assert (await shared_api.client.post(f"/api/groups/{group['id']}/join", headers=bob.auth)).status_code == 404
    listed = await shared_api.client.get("/api/groups", params={"topic": "doomed"})
    assert listed.json()["items"] == []
    deleted = (await shared_api.published("group", group["id"]))[-1]
    assert deleted.type == "group.deleted"
    assert sorted(deleted.payload["member_ids"]) == sorted([ann.user_id, bob.user_id])
    assert (deleted.payload["name"], deleted.payload["deleted_by"]) == ("Doomed Group", ann.user_id)
    # The slug stays taken: an old link never leads to another group.
    assert (await shared_api.create(ann, name="Doomed Group"))["slug"] != group["slug"]


# --- POST /join, DELETE /members/me -----------------------------------------------------------------------------------


async def test_joining_an_open_group_makes_a_member_at_once(shared_api: Any) -> None:
    ann, bob = await shared_api.people("Ann", "Bob")
    group = await shared_api.create(ann)
    assert await shared_api.join(bob, group["id"]) == "member"
    assert await shared_api.join(bob, group["id"]) == "member"  # asking again changes nothing
    assert (await shared_api.get(group["id"], bob))["member_count"] == 2
    assert (await shared_api.get(group["id"], bob))["my_membership"] == {"role": "member", "status": "member"}
    joined = (await shared_api.published("membership", group["id"]))[1:]
    assert [(e.type, e.payload["user_id"], e.payload["via"]) for e in joined] == [
        ("membership.joined", bob.user_id, "open")
    ]


async def test_an_approval_group_takes_requests_with_one_answer_per_question(shared_api: Any) -> None:
    ann, co, bob = await shared_api.people("Ann", "Co", "Bob")
    group = await shared_api.create(ann, join_policy="approval", questions=QUESTIONS)
    await shared_api.join(co, group["id"], ["a", "b"])
    await shared_api.approve(ann, group["id"], co)
    await shared_api.set_role(ann, group["id"], co, "co_organizer")
    join = f"/api/groups/{group['id']}/join"

    for answers in ([], ["only one"], ["one", "  "]):
        response = await shared_api.client.post(join, json={"answers": answers}, headers=bob.auth)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"].startswith("answers")

    assert await shared_api.join(bob, group["id"], ["Fresh air", "Yes"]) == "pending"
    assert (await shared_api.get(group["id"], bob))["member_count"] == 2
    requests = await shared_api.client.get(f"/api/groups/{group['id']}/requests", headers=co.auth)
    assert requests.status_code == 200
    [request] = requests.json()["items"]
    assert (request["user_id"], request["display_name"]) == (bob.user_id, "Bob")
    assert request["answers"] == [
        {"question": QUESTIONS[0], "answer": "Fresh air"},
        {"question": QUESTIONS[1], "answer": "Yes"},
    ]
    created = (await shared_api.published("join_request", group["id"]))[-1]
    assert created.type == "join_request.created"
    assert sorted(created.payload["approver_ids"]) == sorted([ann.user_id, co.user_id])
    assert created.payload["answers"][0]["answer"] == "Fresh air"


async def test_approving_a_request_makes_a_member_and_denying_drops_it(shared_api: Any) -> None:
    ann, bob, cat = await shared_api.people("Ann", "Bob", "Cat")
    group = await shared_api.create(ann, join_policy="approval")
    await shared_api.join(bob, group["id"])
    await shared_api.join(cat, group["id"])
    requests = f"/api/groups/{group['id']}/requests"

    approved = await shared_api.client.post(f"{requests}/{bob.user_id}/approve", headers=ann.auth)
    assert approved.json() == {"user_id": bob.user_id, "status": "member"}
    denied = await shared_api.client.post(f"{requests}/{cat.user_id}/deny", headers=ann.auth)
    assert denied.json() == {"user_id": cat.user_id, "status": "denied"}
    again = await shared_api.client.post(f"{requests}/{cat.user_id}/approve", headers=ann.auth)
    assert again.status_code == 404

    assert (await shared_api.get(group["id"]))["member_count"] == 2
    assert (await shared_api.client.get(requests, headers=ann.auth)).json()["items"] == []
    assert (await shared_api.get(group["id"], cat))["my_membership"] is None
    decisions = await shared_api.published("join_request", group["id"])
    assert [(e.type, e.payload["user_id"]) for e in decisions][-2:] == [
        ("join_request.approved", bob.user_id),
        ("join_request.denied", cat.user_id),
    ]
    assert decisions[-2].payload["decided_by"] == ann.user_id


async def test_leaving_and_the_last_organizer(shared_api: Any) -> None:
    ann, bob, cat = await shared_api.people("Ann", "Bob", "Cat")
    group = await shared_api.create(ann)
    leave = f"/api/groups/{group['id']}/members/me"
    await shared_api.join(bob, group["id"])

    refused = await shared_api.client.delete(leave, headers=ann.auth)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await shared_api.client.delete(leave, headers=bob.auth)).status_code == 204
    assert (await shared_api.client.delete(leave, headers=cat.auth)).status_code == 404
    assert (await shared_api.get(group["id"]))["member_count"] == 1

    # With a second organizer the first may go.
    await shared_api.join(bob, group["id"])
    await shared_api.set_role(ann, group["id"], bob, "organizer")
    assert (await shared_api.client.delete(leave, headers=ann.auth)).status_code == 204
    assert [m["user_id"] for m in await shared_api.members(group["id"])] == [bob.user_id]
    left = (await shared_api.published("membership", group["id"]))[-1]
    assert (left.type, left.payload["user_id"], left.payload["role"]) == ("membership.left", ann.user_id, "organizer")


async def test_a_pending_requester_who_leaves_withdraws_the_request(shared_api: Any) -> None:
    ann, bob = await shared_api.people("Ann", "Bob")
    group = await shared_api.create(ann, join_policy="approval")
    await shared_api.join(bob, group["id"])
    response = await shared_api.client.delete(f"/api/groups/{group['id']}/members/me", headers=bob.auth)
    assert response.status_code == 204
    assert (await shared_api.client.get(f"/api/groups/{group['id']}/requests", headers=ann.auth)).json()["items"] == []
    assert (await shared_api.published("join_request", group["id"]))[-1].type == "join_request.withdrawn"


# --- GET /members ---------------------------------------------------------------------------------------------------


async def test_members_are_listed_leaders_first_and_paged(shared_api: Any) -> None:
    ann, bob, cat, dan = await shared_api.people("Ann", "Bob", "Cat", "Dan")
    group = await shared_api.create(ann)
    for person in (bob, cat, dan):
        await shared_api.join(person, group["id"])
    await shared_api.set_role(ann, group["id"], dan, "co_organizer")
    await shared_api.set_role(ann, group["id"], cat, "event_organizer")
    await shared_api.running.settle()

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await shared_api.client.get(f"/api/groups/{group['id']}/members", params=params)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [(m["display_name"], m["role"]) for m in seen] == [
        ("Ann", "organizer"),
        ("Dan", "co_organizer"),
        ("Cat", "event_organizer"),
        ("Bob", "member"),
    ]
    assert set(seen[0]) == {"user_id", "display_name", "avatar", "role", "joined_at"}
    assert (
        await shared_api.client.get(f"/api/groups/{group['id']}/members", params={"cursor": "!!"})
    ).status_code == 422


# --- PUT /role, DELETE /members/{user_id} -----------------------------------------------------------------------


async def test_roles_change_within_the_rules(shared_api: Any) -> None:
    ann, co, bob = await shared_api.people("Ann", "Co", "Bob")
    group = await shared_api.create(ann)
    for person in (co, bob):
        await shared_api.join(person, group["id"])
    await shared_api.set_role(ann, group["id"], co, "co_organizer")
    role_of = f"/api/groups/{group['id']}/members/{{}}/role"

    response = await shared_api.client.put(
        role_of.format(bob.user_id), json={"role": "event_organizer"}, headers=co.auth
    )
    assert response.status_code == 200
    assert (response.json()["user_id"], response.json()["role"]) == (bob.user_id, "event_organizer")
    # A co-organizer cannot make organizers or touch their peers; nobody can demote the last organizer.
    for target, role, who in ((bob, "organizer", co), (co, "member", co), (ann, "member", co)):
        response = await shared_api.client.put(role_of.format(target.user_id), json={"role": role}, headers=who.auth)
        assert response.status_code == 403, (target.display_name, role)
    assert (
        await shared_api.client.put(role_of.format(ann.user_id), json={"role": "member"}, headers=ann.auth)
    ).status_code == 409
    bad = await shared_api.client.put(role_of.format(bob.user_id), json={"role": "king"}, headers=ann.auth)
    assert bad.status_code == 422
    outsider = await shared_api.person("Eve")
    assert (
        await shared_api.client.put(role_of.format(outsider.user_id), json={"role": "member"}, headers=ann.auth)
    ).status_code == 404

    changes = [e for e in await shared_api.published("membership", group["id"]) if e.type == "membership.role_changed"]
    assert [(e.payload["user_id"], e.payload["previous_role"], e.payload["role"]) for e in changes][-1] == (
        bob.user_id,
        "member",
        "event_organizer",
    )


async def test_a_removed_member_may_rejoin_but_a_banned_one_may_not(shared_api: Any) -> None:
    ann, bob, cat = await shared_api.people("Ann", "Bob", "Cat")
    group = await shared_api.create(ann)
    for person in (bob, cat):
        await shared_api.join(person, group["id"])
    member = f"/api/groups/{group['id']}/members/{{}}"

    assert (await shared_api.client.delete(member.format(bob.user_id), headers=ann.auth)).status_code == 204
    assert (await shared_api.client.delete(member.format(bob.user_id), headers=ann.auth)).status_code == 404
    assert await shared_api.join(bob, group["id"]) == "member"

    banned = await shared_api.client.delete(member.format(cat.user_id), params={"ban": "true"}, headers=ann.auth)
    assert banned.status_code == 204
    refused = await shared_api.client.post(f"/api/groups/{group['id']}/join", headers=cat.auth)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await shared_api.get(group["id"]))["member_count"] == 2
    assert (await shared_api.client.delete(member.format(ann.user_id), headers=ann.auth)).status_code == 409

    removals = [e for e in await shared_api.published("membership", group["id"]) if e.type == "membership.removed"]
    assert [(e.payload["user_id"], e.payload["banned"]) for e in removals] == [
        (bob.user_id, False),
        (cat.user_id, True),
    ]


async def test_someone_can_be_banned_before_they_join(shared_api: Any) -> None:
    ann, troll = await shared_api.people("Ann", "Troll")
    group = await shared_api.create(ann, join_policy="approval")
    await shared_api.join(troll, group["id"])
    await shared_api.ban(ann, group["id"], troll)
    assert (await shared_api.get(group["id"], troll))["my_membership"] == {"role": None, "status": "banned"}
    assert (await shared_api.client.post(f"/api/groups/{group['id']}/join", headers=troll.auth)).status_code == 403
    assert (await shared_api.published("join_request", group["id"]))[-1].type == "join_request.denied"


# --- POST /announcements ------------------------------------------------------------------------------------------


async def test_an_announcement_is_published_for_every_member(shared_api: Any) -> None:
    ann, bob, cat, dan = await shared_api.people("Ann", "Bob", "Cat", "Dan")
    group = await shared_api.create(ann, name="Announcers", join_policy="approval")
    for person in (bob, cat):
        await shared_api.join(person, group["id"])
        await shared_api.approve(ann, group["id"], person)
    await shared_api.join(dan, group["id"])  # pending: not a member, not told
    url = f"/api/groups/{group['id']}/announcements"

    response = await shared_api.client.post(
        url, json={"subject": " Picnic ", "body": "Sunday at noon"}, headers=ann.auth
    )
    assert response.status_code == 202, response.text
    [announcement] = [e for e in await shared_api.published("group", group["id"]) if e.type == "group.announcement"]
    payload = announcement.payload
    assert payload["announcement_id"] == response.json()["announcement_id"]
    assert (payload["subject"], payload["body"], payload["group_name"]) == ("Picnic", "Sunday at noon", "Announcers")
    assert (payload["author_id"], sorted(payload["recipient_ids"])) == (ann.user_id, sorted([bob.user_id, cat.user_id]))

    for body in ({"subject": "", "body": "x"}, {"subject": "x", "body": " "}, {"subject": "x"}):
        assert (await shared_api.client.post(url, json=body, headers=ann.auth)).status_code == 422


# --- what is published ---------------------------------------------------------------------------------------------


async def test_group_events_carry_the_whole_group_as_the_api_shows_it(shared_api: Any) -> None:
    """The events service keeps group summaries from group.created / group.updated alone: each must hold every
    public detail, equal to what GET shows, and every published payload must parse with its contract schema."""
    ann, bob = await shared_api.people("Ann", "Bob")
    group = await shared_api.create(
        ann,
        name="Snapshot Club",
        description="All of it",
        topics=["Maps"],
        city="Berlin",
        location={"lat": 52.52, "lng": 13.405},
        visibility="private",
        join_policy="approval",
        questions=["Why?"],
    )
    await shared_api.client.patch(
        f"/api/groups/{group['id']}", json={"city": "Potsdam", "topics": ["Maps", "Lakes"]}, headers=ann.auth
    )
    await shared_api.join(bob, group["id"], ["Because"])
    await shared_api.approve(ann, group["id"], bob)
    await shared_api.set_role(ann, group["id"], bob, "co_organizer")
    shown = await shared_api.get(group["id"])

    published = await shared_api.published("group", group["id"])
    assert _types(published) == ["group.created", "group.updated"]
    snapshot_fields = ("slug", "name", "description", "topics", "city", "location", "visibility", "join_policy")
    created, updated = published[0].payload, published[1].payload
    assert created["group_id"] == updated["group_id"] == group["id"]
    assert {f: created[f] for f in snapshot_fields} == {f: group[f] for f in snapshot_fields}
    assert {f: updated[f] for f in snapshot_fields} == {f: shown[f] for f in snapshot_fields}
    assert created["banner_image_id"] is None

    for topic in ("group", "membership", "join_request"):
        for envelope in await shared_api.published(topic, group["id"]):
            parsed = envelope.event()  # raises when a required field is missing
            assert set(envelope.payload) == set(type(parsed).model_fields), envelope.type
    changed = (await shared_api.published("membership", group["id"]))[-1].payload
    assert (changed["user_id"], changed["role"], changed["previous_role"], changed["changed_by"]) == (
        bob.user_id,
        "co_organizer",
        "member",
        ann.user_id,
    )


# --- member_count under concurrency ---------------------------------------------------------------------------------


async def test_member_count_stays_exact_under_concurrent_joins_and_leaves(shared_api: Any) -> None:
    ann = await shared_api.person("Ann")
    people = await shared_api.people(*(f"P{n}" for n in range(8)))
    group = await shared_api.create(ann)
    join = f"/api/groups/{group['id']}/join"
    leave = f"/api/groups/{group['id']}/members/me"

    responses = await asyncio.gather(*(shared_api.client.post(join, headers=p.auth) for p in people * 2))
    assert all(r.status_code == 200 for r in responses)
    assert (await shared_api.get(group["id"]))["member_count"] == 9
    responses = await asyncio.gather(
        *(shared_api.client.delete(leave, headers=p.auth) for p in people[:5]),
        *(shared_api.client.post(join, headers=p.auth) for p in people[5:]),
    )
    assert all(r.status_code in (200, 204) for r in responses)
    assert (await shared_api.get(group["id"]))["member_count"] == 4 == len(await shared_api.members(group["id"]))
