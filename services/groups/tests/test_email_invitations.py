"""Issue 15's email invitations through HTTP: an email invitation is tied to its address (only the person whose
confirmed email it is may use it), email invitations are bounded per inviter and per group a day (429 with
Retry-After), hostile addresses are refused, and a decision's message follows the text policy of messages."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from gatherly.app.testing import FAST_SETTINGS, running_gatherly, sign_up, wait_for_mail
from gatherly.groups.tables import invitations
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.testing import DB_BACKENDS

pytestmark = pytest.mark.asyncio(loop_scope="module")

PER_INVITER, PER_GROUP = 2, 3


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One Gatherly for the module, with small daily bounds on email invitations."""
    from .conftest import GroupsApi  # type: ignore[import-not-found]

    async with running_gatherly(
        tmp_path_factory.mktemp("invitations") / "data",
        database_backend=request.param,
        invitation_emails_per_inviter_per_day=PER_INVITER,
        invitation_emails_per_group_per_day=PER_GROUP,
        **FAST_SETTINGS,
    ) as running:
        yield GroupsApi(running)


def _address() -> str:
    return f"guest-{uuid.uuid4().hex[:10]}@example.org"


async def _invite(api: Any, manager: Any, group_id: str, **terms: Any) -> Any:
    return await api.client.post(f"/api/groups/{group_id}/invitations", json=terms, headers=manager.auth)


async def _join_with(api: Any, person: Any, group_id: str, token: str) -> Any:
    return await api.client.post(f"/api/groups/{group_id}/join", json={"invitation": token}, headers=person.auth)


# --- tied to the address -----------------------------------------------------------------------------------------


async def test_an_email_invitation_lets_in_only_the_person_whose_confirmed_email_it_was_sent_to(api: Any) -> None:
    olga, bob, cat = await api.people("Olga", "Bob", "Cat")
    group = await api.create(olga, name="For Bob Only", join_policy="approval", questions=["Why?"])
    await api.running.settle()  # the people's confirmed addresses reach the groups service as events
    sent = await _invite(api, olga, group["id"], email=bob.email.upper())
    assert sent.status_code == 201, sent.text
    token = sent.json()["token"]

    taken = await _join_with(api, cat, group["id"], token)
    assert taken.status_code == 403, taken.text
    assert taken.headers["content-type"] == "application/problem+json"
    assert taken.json()["title"] == "Invitation for another address"
    assert "another email address" in taken.json()["detail"]
    listed = (await api.client.get(f"/api/groups/{group['id']}/invitations", headers=olga.auth)).json()
    assert listed["items"][0]["uses"] == 0  # the refused attempt used nothing up
    assert (await api.get(group["id"], cat))["my_membership"] is None

    assert (await _join_with(api, bob, group["id"], token)).json() == {"status": "member"}


async def test_an_invitation_to_a_deleted_account_keeps_no_address_and_admits_nobody(api: Any) -> None:
    (cat,) = await api.people("Cat")
    olga = await sign_up(api.running, display_name="Olga Inviting")  # her own daily bound: the module's is spent
    dora = await sign_up(api.running, display_name="Dora Leaving")  # this test's own: she deletes her account
    group = await api.create(olga, name=f"For Dora {uuid.uuid4().hex[:6]}", join_policy="approval", questions=["?"])
    await api.running.settle()
    to_dora = await _invite(api, olga, group["id"], email=dora.email)
    someone = _address()
    to_someone = await _invite(api, olga, group["id"], email=someone)
    assert to_dora.status_code == to_someone.status_code == 201, (to_dora.text, to_someone.text)
    to_dora, to_someone = to_dora.json(), to_someone.json()

    assert (await api.client.delete("/api/users/me", headers=dora.auth)).status_code == 202
    await api.running.settle()

    listed = await api.client.get(f"/api/groups/{group['id']}/invitations", headers=olga.auth)
    assert dora.email not in listed.text
    items = {item["id"]: item for item in listed.json()["items"]}
    assert (items[to_dora["id"]]["email"], items[to_dora["id"]]["account_deleted"]) == (None, True)
    assert (items[to_someone["id"]]["email"], items[to_someone["id"]]["account_deleted"]) == (someone, False)
    async with api.stores() as stores:
        row = (await stores.groups.session.execute(select(invitations).where(invitations.c.id == to_dora["id"]))).one()
    assert (row.email, row.email_hash) == (None, None) and row.redacted_at is not None

    # Without its address it is no open link: not for anyone holding it, nor for whoever takes the address next.
    for person in (cat, await sign_up(api.running, email=dora.email, display_name="Dora Again")):
        await api.running.settle()
        refused = await _join_with(api, person, group["id"], to_dora["token"])
        assert refused.status_code == 410, refused.text
        assert "account that has been deleted" in refused.json()["detail"]
        assert (await api.get(group["id"], person))["my_membership"] is None


async def test_a_link_invitation_still_lets_in_whoever_holds_it(api: Any) -> None:
    ann, cat = await api.people("Ann", "Cat")
    group = await api.create(ann, name="Open Link", join_policy="approval", questions=["Why?"])
    link = await _invite(api, ann, group["id"])
    assert (await _join_with(api, cat, group["id"], link.json()["token"])).json() == {"status": "member"}


async def test_an_email_invitation_follows_the_persons_confirmed_address_not_the_one_they_signed_up_with(
    api: Any,
) -> None:
    """The groups service keeps the hash of the address each `user.profile_updated` carries: after a confirmed
    change of address, invitations to the old address are someone else's."""
    pia, dan = await api.people("Pia", "Dan")
    group = await api.create(pia, name="Moved Address", join_policy="approval", questions=["Why?"])
    await api.running.settle()
    old = (await _invite(api, pia, group["id"], email=dan.email)).json()["token"]
    new_address = _address()
    body = {"new_email": new_address, "password": dan.password}
    assert (await api.client.post("/api/users/me/email", json=body, headers=dan.auth)).status_code == 202
    [mail] = await wait_for_mail(api.running, new_address)
    [token] = re.findall(r"confirm-email\?token=([\w-]+)", mail.get_body(("plain",)).get_content())
    assert (await api.client.post("/api/auth/confirm-email", json={"token": token})).status_code == 200
    await api.running.settle()

    assert (await _join_with(api, dan, group["id"], old)).status_code == 403
    new = (await _invite(api, pia, group["id"], email=new_address.upper())).json()["token"]
    assert (await _join_with(api, dan, group["id"], new)).json() == {"status": "member"}


async def test_another_groups_invitation_is_unknown_here(api: Any) -> None:
    quinn, bob = await api.people("Quinn", "Bob")
    here = await api.create(quinn, name="Here")
    there = await api.create(quinn, name="There", join_policy="approval", questions=["Why?"])
    await api.running.settle()
    elsewhere = (await _invite(api, quinn, here["id"], email=bob.email)).json()
    assert (await _join_with(api, bob, there["id"], elsewhere["token"])).status_code == 404
    revoked = await api.client.delete(f"/api/groups/{there['id']}/invitations/{elsewhere['id']}", headers=quinn.auth)
    assert revoked.status_code == 404


@pytest.mark.parametrize(
    "address",
    [
        "ann\x00@example.org",
        "ann\ud800@example.org",
        "ann\u202e@example.org",
        "ann@exa\u202emple.org",
        "a" * 250 + "@example.org",
        "ann@" + "b" * 10_000 + ".org",
        "ann@example",
        "ann@[127.0.0.1]",
        "two@@example.org",
        "Ann <ann@example.org>",
        "ann@example.org\r\nBcc: everyone@example.org",
        "",
        "   ",
    ],
)
async def test_hostile_and_malformed_addresses_are_refused_with_the_field_named(api: Any, address: str) -> None:
    ann = await api.person("Ann")
    group = await api.create(ann, name="Careful Addresses")
    response = await api.client.post(
        f"/api/groups/{group['id']}/invitations",
        content=json.dumps({"email": address}),  # ASCII escapes: a lone surrogate reaches the server as sent
        headers={**ann.auth, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "email" in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize("value", [5, True, None, ["ann@example.org"], {"address": "ann@example.org"}])
async def test_an_address_that_is_not_a_string_is_refused(api: Any, value: Any) -> None:
    ann = await api.person("Ann")
    group = await api.create(ann, name="Typed Addresses")
    response = await _invite(api, ann, group["id"], email=value)  # never mailed: within Ann's bound
    if value is None:  # null is "no address": a link invitation
        assert response.status_code == 201 and response.json()["email"] is None
        return
    assert response.status_code == 422, response.text
    assert "email" in [e["field"] for e in response.json()["errors"]]


# --- the daily bounds ----------------------------------------------------------------------------------------------


async def test_email_invitations_are_bounded_per_inviter_and_per_group_a_day(api: Any) -> None:
    ann, cat, eve = await api.people("Ann", "Cat", "Eve")
    group = await api.create(ann, name="Busy Inviters")
    for person in (cat, eve):
        await api.join(person, group["id"])
        await api.set_role(ann, group["id"], person, "co_organizer")
    for _ in range(PER_INVITER):
        assert (await _invite(api, ann, group["id"], email=_address())).status_code == 201

    refused = await _invite(api, ann, group["id"], email=_address())
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["title"] == "Too many invitations"
    assert "from one person" in refused.json()["detail"]
    assert 23 * 3600 < int(refused.headers["retry-after"]) <= 24 * 3600
    # Links are not mailed by Gatherly: not bounded.
    assert (await _invite(api, ann, group["id"])).status_code == 201
    # The inviter's bound is theirs across groups.
    other = await api.create(ann, name="Another Group Of Ann")
    assert (await _invite(api, ann, other["id"], email=_address())).status_code == 429

    # Another manager of the group has their own bound, but the group's is shared.
    assert (await _invite(api, cat, group["id"], email=_address())).status_code == 201
    by_group = await _invite(api, eve, group["id"], email=_address())
    assert by_group.status_code == 429, by_group.text
    assert "for one group" in by_group.json()["detail"]
    assert len([e for e in await api.published("group", group["id"]) if e.type == "group.invitation_sent"]) == 3

    # A day later the window has moved on.
    platform = api.running.process.platform
    real = platform.clock
    platform.clock = FrozenClock(real.now() + timedelta(days=1, seconds=1))
    try:
        assert (await _invite(api, ann, group["id"], email=_address())).status_code == 201
    finally:
        platform.clock = real


# --- a decision's message -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message", ["Wel\u202ecome", "see \u2066you\u2069", "ring\x07", "clear\x1b[2J", "next\x85line", "\u200b\u2060"]
)
async def test_a_decision_message_refuses_bidi_overrides_control_and_invisible_only_text(
    api: Any, message: str
) -> None:
    ann, bob = await api.people("Ann", "Bob")
    group = await api.create(
        ann, name=f"Plain Words {uuid.uuid4().hex[:6]}", join_policy="approval", questions=["Why?"]
    )
    await api.join(bob, group["id"], ["Hi"])
    for decision in ("approve", "deny"):
        refused = await api.client.post(
            f"/api/groups/{group['id']}/requests/{bob.user_id}/{decision}", json={"message": message}, headers=ann.auth
        )
        assert refused.status_code == 422, refused.text
        assert "message" in [e["field"] for e in refused.json()["errors"]]
    approved = await api.client.post(
        f"/api/groups/{group['id']}/requests/{bob.user_id}/approve",
        json={"message": "Welcome!\nWe meet on Saturdays.\tBring boots."},
        headers=ann.auth,
    )
    assert approved.status_code == 200, approved.text
