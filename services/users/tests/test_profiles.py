"""Profiles through HTTP: reading and editing one's own, public profiles, and avatars from the images service."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from gatherly.app.testing import Person, RunningGatherly, sign_up
from gatherly.contracts.base import IntegrationEvent
from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import ImageVariants
from gatherly.kernel.messages import Envelope
from gatherly.users import store
from gatherly.users.domain import Email, Profile, UserId

Published = Callable[..., Awaitable[list[Any]]]
VARIANTS = ImageVariants(
    thumb="https://cdn.test/t.webp", medium="https://cdn.test/m.webp", large="https://cdn.test/l.webp"
)

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _patch(users: RunningGatherly, person: Person, **changes: Any) -> Any:
    return await users.client.patch("/api/users/me", json=changes, headers=person.auth)


async def _me(users: RunningGatherly, person: Person) -> dict[str, Any]:
    response = await users.client.get("/api/users/me", headers=person.auth)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _images_service_says(users: RunningGatherly, *events: IntegrationEvent) -> None:
    now = datetime.now(UTC)
    await users.process.platform.log.publish([Envelope.wrap(event, now).to_message() for event in events])
    await users.settle()


def _ready(image_id: str, owner: Person, purpose: str = "avatar") -> ImageReady:
    return ImageReady(
        image_id=image_id, owner_id=owner.user_id, purpose=purpose, variants=VARIANTS, ready_at=datetime.now(UTC)
    )


async def test_my_profile_has_every_field_of_the_contract(users: RunningGatherly) -> None:
    person = await sign_up(users, display_name="Ann")
    me = await _me(users, person)
    assert set(me) == {"id", "email", "display_name", "bio", "city", "location", "topics", "avatar", "created_at"}
    assert (me["id"], me["email"], me["display_name"]) == (person.user_id, person.email, "Ann")
    assert (me["bio"], me["city"], me["location"], me["topics"], me["avatar"]) == ("", None, None, [], None)
    assert datetime.fromisoformat(me["created_at"]).tzinfo is not None


async def test_editing_my_profile_changes_only_what_i_send_and_tells_other_services(
    users: RunningGatherly, published: Published
) -> None:
    person = await sign_up(users, display_name="Ann")
    response = await _patch(
        users,
        person,
        display_name="  Ann Smith ",
        bio="Hiking & board games.\nSay hi!",
        city="Berlin",
        location={"lat": 52.52, "lng": 13.405},
        topics=["Hiking", "board games", "hiking"],
    )
    assert response.status_code == 200
    body = response.json()
    assert body["display_name"] == "Ann Smith" and body["bio"] == "Hiking & board games.\nSay hi!"
    assert body["location"] == {"lat": 52.52, "lng": 13.405} and body["topics"] == ["hiking", "board games"]

    again = (await _patch(users, person, city=None)).json()
    assert (await _patch(users, person, topics=None)).json()["topics"] == []
    again = (await _patch(users, person, topics=["hiking", "board games"])).json()
    assert (
        again["city"] is None and again["display_name"] == "Ann Smith" and again["topics"] == ["hiking", "board games"]
    )
    assert await _me(users, person) == again

    updates = await published("user.profile_updated", user_id=person.user_id)
    assert [u.display_name for u in updates] == ["Ann"] + ["Ann Smith"] * 4  # confirmation, then four edits
    assert updates[-1].user_id == person.user_id and updates[-1].email == person.email and updates[-1].city is None


async def test_an_edit_writes_every_column_of_a_profile() -> None:
    """A profile's UPDATE is built once with a parameter per column (store.SAVE_PROFILE): the columns a profile
    fills must be exactly those, or an edit would leave one unwritten."""
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    profile = Profile(UserId("ann"), Email("ann@example.org"), "Ann", now, now)
    assert set(store._profile_values(profile)) == set(store.PROFILE_VALUES)


async def test_invalid_profile_values_are_refused_with_the_field_named(users: RunningGatherly) -> None:
    person = await sign_up(users)
    for changes, field in [
        ({"display_name": ""}, "display_name"),
        ({"display_name": "\u200b\u200b"}, "display_name"),  # invisible only
        ({"display_name": "\u3164"}, "display_name"),  # a Hangul filler: a letter that shows nothing
        ({"display_name": " \u2800 \u200d"}, "display_name"),
        ({"display_name": None}, "display_name"),
        ({"bio": "x" * 2001}, "bio"),
        ({"location": {"lat": 95, "lng": 0}}, "location"),
        # Numbers only, like every location of the API (an outsider's probe: "1" was read as 1.0).
        ({"location": {"lat": "1", "lng": 0}}, "location.lat"),
        ({"location": {"lat": 1, "lng": True}}, "location.lng"),
        ({"location": {"lat": 1, "lng": 0, "alt": 30}}, "location.alt"),
        ({"topics": [f"t{n}" for n in range(21)]}, "topics"),
        ({"avatar_image_id": "not-a-uuid"}, "avatar_image_id"),
    ]:
        response = await _patch(users, person, **changes)
        assert response.status_code == 422, changes
        assert response.json()["errors"][0]["field"].startswith(field)
    integers = await _patch(users, person, location={"lat": 52, "lng": -13})  # JSON integers are numbers
    assert integers.json()["location"] == {"lat": 52.0, "lng": -13.0}


async def test_a_field_that_cannot_be_edited_is_refused_not_ignored(users: RunningGatherly) -> None:
    person = await sign_up(users)
    response = await _patch(users, person, email="someone.else@example.org", bio="Hi")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "email"
    me = await _me(users, person)
    assert (me["email"], me["bio"]) == (person.email, "")


async def test_a_public_profile_shows_no_email_and_a_city_but_never_the_point(users: RunningGatherly) -> None:
    ann = await sign_up(users, display_name="Ann")
    bob = await sign_up(users)
    await _patch(users, ann, bio="Hi", topics=["chess"], city="Lyon", location={"lat": 45.764, "lng": 4.8357})
    for headers in ({}, bob.auth, ann.auth):  # anonymous, someone else, and the owner viewing as others do
        response = await users.client.get(f"/api/users/{ann.user_id}", headers=headers)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"id", "display_name", "bio", "city", "topics", "avatar", "created_at"}
        assert body["city"] == "Lyon" and "45.764" not in response.text
    assert (await _me(users, ann))["location"] == {"lat": 45.764, "lng": 4.8357}  # the owner sees their point
    assert (body["id"], body["display_name"], body["bio"], body["topics"]) == (ann.user_id, "Ann", "Hi", ["chess"])
    assert (await users.client.get(f"/api/users/{uuid.uuid4()}")).status_code == 404


async def test_an_unconfirmed_account_has_no_public_profile(users: RunningGatherly, published: Published) -> None:
    await users.client.post(
        "/api/auth/signup",
        json={"email": "new@example.org", "password": "a long enough passphrase", "display_name": "N"},
    )
    (registered,) = await published("user.registered", email="new@example.org")
    assert (await users.client.get(f"/api/users/{registered.user_id}")).status_code == 404


async def test_profiles_need_a_token(users: RunningGatherly) -> None:
    assert (await users.client.get("/api/users/me")).status_code == 401
    assert (await users.client.patch("/api/users/me", json={"bio": "x"})).status_code == 401


async def test_an_avatar_appears_once_the_image_is_ready_and_other_services_hear_of_it(
    users: RunningGatherly, published: Published
) -> None:
    person = await sign_up(users)
    image_id = str(uuid.uuid4())
    patched = await _patch(users, person, avatar_image_id=image_id)
    assert patched.status_code == 200 and patched.json()["avatar"] is None  # not ready yet

    await _images_service_says(users, _ready(image_id, person))
    assert (await _me(users, person))["avatar"] == VARIANTS.model_dump()
    public = (await users.client.get(f"/api/users/{person.user_id}")).json()
    assert public["avatar"] == VARIANTS.model_dump()
    assert (await published("user.profile_updated", user_id=person.user_id))[-1].avatar == VARIANTS


async def test_an_avatar_ready_before_it_is_chosen_shows_at_once(users: RunningGatherly) -> None:
    person = await sign_up(users)
    image_id = str(uuid.uuid4())
    await _images_service_says(users, _ready(image_id, person))
    assert (await _patch(users, person, avatar_image_id=image_id)).json()["avatar"] == VARIANTS.model_dump()


async def test_someone_elses_image_never_becomes_my_avatar(users: RunningGatherly, published: Published) -> None:
    me, other = await sign_up(users), await sign_up(users)
    image_id = str(uuid.uuid4())
    await _patch(users, me, avatar_image_id=image_id)
    before = len(await published("user.profile_updated", user_id=me.user_id))
    await _images_service_says(users, _ready(image_id, other))
    assert (await _me(users, me))["avatar"] is None
    assert len(await published("user.profile_updated", user_id=me.user_id)) == before


async def test_an_image_for_another_purpose_is_not_an_avatar(users: RunningGatherly) -> None:
    person = await sign_up(users)
    image_id = str(uuid.uuid4())
    await _patch(users, person, avatar_image_id=image_id)
    await _images_service_says(users, _ready(image_id, person, purpose="event_photo"))
    assert (await _me(users, person))["avatar"] is None


async def test_a_deleted_avatar_disappears_and_other_services_hear_of_it(
    users: RunningGatherly, published: Published
) -> None:
    person = await sign_up(users)
    image_id = str(uuid.uuid4())
    await _images_service_says(users, _ready(image_id, person))
    await _patch(users, person, avatar_image_id=image_id)
    await _images_service_says(users, ImageDeleted(image_id=image_id, owner_id=person.user_id))
    assert (await _me(users, person))["avatar"] is None
    assert (await published("user.profile_updated", user_id=person.user_id))[-1].avatar is None


async def test_an_image_event_delivered_twice_is_applied_once(users: RunningGatherly, published: Published) -> None:
    person = await sign_up(users)
    image_id = str(uuid.uuid4())
    await _patch(users, person, avatar_image_id=image_id)
    before = len(await published("user.profile_updated", user_id=person.user_id))
    message = Envelope.wrap(_ready(image_id, person), datetime.now(UTC)).to_message()
    await users.process.platform.log.publish([message, message])
    await users.settle()
    assert len(await published("user.profile_updated", user_id=person.user_id)) == before + 1
