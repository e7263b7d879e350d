"""Changing one's password and email address while logged in, through HTTP: what is checked, which sessions end,
the emails sent, and addresses taken meanwhile (races included)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from gatherly.app.devmail import text_of
from gatherly.app.testing import Person, RunningGatherly, mail_to, sign_up, wait_for_mail
from gatherly.kernel.clock import FrozenClock

LinkInMail = Callable[..., Awaitable[str]]
Published = Callable[..., Awaitable[list[Any]]]
NEW_PASSWORD = "a brand new passphrase"

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _log_in(users: RunningGatherly, email: str, password: str) -> Any:
    return await users.client.post("/api/auth/login", json={"email": email, "password": password})


async def _refresh(users: RunningGatherly, refresh_token: str) -> Any:
    return await users.client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


async def _change_password(users: RunningGatherly, person: Person, current: str, new: str = NEW_PASSWORD) -> Any:
    body = {"current_password": current, "new_password": new}
    return await users.client.post("/api/users/me/password", json=body, headers=person.auth)


async def _change_email(users: RunningGatherly, person: Person, new_email: str, password: str | None = None) -> Any:
    body = {"new_email": new_email, "password": person.password if password is None else password}
    return await users.client.post("/api/users/me/email", json=body, headers=person.auth)


async def _confirm(users: RunningGatherly, token: str) -> Any:
    return await users.client.post("/api/auth/confirm-email", json={"token": token})


def _field(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    field: str = response.json()["errors"][0]["field"]
    return field


# --- password ---------------------------------------------------------------------------------------------------


async def test_changing_my_password_keeps_this_device_and_ends_the_others(users: RunningGatherly) -> None:
    person = await sign_up(users)
    other_device = (await _log_in(users, person.email, person.password)).json()

    assert (await _change_password(users, person, person.password)).status_code == 204

    assert (await _log_in(users, person.email, person.password)).status_code == 401
    assert (await _log_in(users, person.email, NEW_PASSWORD)).status_code == 200
    assert (await _refresh(users, other_device["refresh_token"])).status_code == 401
    assert (await _refresh(users, person.refresh_token)).status_code == 200  # the device that changed it


async def test_a_wrong_current_password_is_refused_and_counts_toward_the_lockout(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    person = await sign_up(users)  # (the clock stands still: the first lockout lasts only a second)
    other_device = (await _log_in(users, person.email, person.password)).json()
    for _ in range(4):
        wrong = await _change_password(users, person, "not my password at all")
        assert wrong.status_code == 403 and _field(wrong) == "current_password"
    assert (await _refresh(users, other_device["refresh_token"])).status_code == 200  # nothing was revoked
    assert (await _change_password(users, person, "not my password at all")).status_code == 403  # the 5th: locked
    locked = await _change_password(users, person, person.password)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert (await _log_in(users, person.email, person.password)).status_code == 429


@pytest.mark.parametrize(
    "new_password", [" " * 12, "short", "password123", "x" * 129], ids=["spaces", "short", "common", "long"]
)
async def test_a_new_password_must_meet_the_policy(users: RunningGatherly, new_password: str) -> None:
    person = await sign_up(users)
    response = await _change_password(users, person, person.password, new_password)
    assert response.status_code == 422 and _field(response) == "new_password"
    assert (await _log_in(users, person.email, person.password)).status_code == 200


async def test_a_reset_link_asked_for_before_a_change_no_longer_works(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    await users.client.post("/api/auth/password-reset", json={"email": person.email})
    reset_link = await link_in_mail(person.email, "reset-password", count=2)
    assert (await _change_password(users, person, person.password)).status_code == 204
    reset = {"token": reset_link, "password": "the attacker's passphrase"}
    assert (await users.client.post("/api/auth/password-reset/confirm", json=reset)).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"current_password": "correct horse battery staple"},
        {"current_password": 12, "new_password": NEW_PASSWORD},
        {"current_password": "correct horse battery staple", "new_password": NEW_PASSWORD, "admin": True},
    ],
    ids=["missing", "wrong-type", "unknown-field"],
)
async def test_a_malformed_password_change_is_a_422(users: RunningGatherly, body: dict[str, Any]) -> None:
    person = await sign_up(users)
    response = await users.client.post("/api/users/me/password", json=body, headers=person.auth)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"


# --- email ------------------------------------------------------------------------------------------------------


async def test_changing_my_email_confirms_the_new_address_and_tells_the_old_one(
    users: RunningGatherly, link_in_mail: LinkInMail, published: Published
) -> None:
    person = await sign_up(users, display_name="Ann")
    new_email = person.email.replace("person-", "moved-")

    response = await _change_email(users, person, new_email.upper())
    assert response.status_code == 202 and response.json() == {}
    (confirmation,) = await wait_for_mail(users, new_email)
    assert confirmation["Subject"] == "Confirm your new email address"
    assert f"{users.settings.effective_public_url}/confirm-email?token=" in text_of(confirmation)
    assert "for 1 day" in text_of(confirmation)
    notice = (await wait_for_mail(users, person.email, count=2))[-1]
    assert notice["Subject"] == "Your Gatherly email address is being changed" and new_email in text_of(notice)

    # Until the link is followed, the old address is the account's.
    assert (await _log_in(users, person.email, person.password)).status_code == 200
    assert (await _log_in(users, new_email, person.password)).status_code == 401

    token = await link_in_mail(new_email, "confirm-email")
    assert (await _confirm(users, token)).status_code == 200
    assert (await _log_in(users, new_email, person.password)).status_code == 200
    assert (await _log_in(users, person.email, person.password)).status_code == 401
    me = await users.client.get("/api/users/me", headers=person.auth)
    assert me.json()["email"] == new_email
    assert (await published("user.profile_updated", user_id=person.user_id))[-1].email == new_email
    assert (await _confirm(users, token)).status_code == 400  # single use


async def test_an_address_another_account_has_is_refused(users: RunningGatherly) -> None:
    person, other = await sign_up(users), await sign_up(users)
    response = await _change_email(users, person, other.email)
    assert response.status_code == 409 and _field(response) == "new_email"
    assert mail_to(users.mail_dir, other.email)[-1]["Subject"] == "Confirm your email address"  # nothing sent


async def test_an_address_taken_before_the_link_is_followed_is_refused_then(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    new_email = person.email.replace("person-", "wanted-")
    await _change_email(users, person, new_email)
    token = await link_in_mail(new_email, "confirm-email")
    # Someone signs up with it meanwhile (an account holds its address from sign-up on).
    signup = {"email": new_email, "password": "someone else's passphrase", "display_name": "Someone"}
    assert (await users.client.post("/api/auth/signup", json=signup)).status_code == 202

    response = await _confirm(users, token)
    assert response.status_code == 409 and _field(response) == "new_email"
    me = await users.client.get("/api/users/me", headers=person.auth)
    assert me.json()["email"] == person.email


async def test_two_accounts_confirming_one_new_address_at_once_only_one_gets_it(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    ann, bob = await sign_up(users), await sign_up(users)
    wanted = ann.email.replace("person-", "contested-")
    # One after the other: `link_in_mail` reads the newest mail, and both could have arrived before the first read.
    await _change_email(users, ann, wanted)
    first = await link_in_mail(wanted, "confirm-email", count=1)
    await _change_email(users, bob, wanted)
    second = await link_in_mail(wanted, "confirm-email", count=2)
    assert first != second

    answers = await asyncio.gather(_confirm(users, first), _confirm(users, second))
    assert sorted(a.status_code for a in answers) == [200, 409]
    emails = [(await users.client.get("/api/users/me", headers=p.auth)).json()["email"] for p in (ann, bob)]
    assert emails.count(wanted) == 1 and (ann.email in emails or bob.email in emails)


async def test_a_new_request_voids_the_link_of_an_earlier_one(users: RunningGatherly, link_in_mail: LinkInMail) -> None:
    person = await sign_up(users)
    first_address = person.email.replace("person-", "first-")
    await _change_email(users, person, first_address)
    first = await link_in_mail(first_address, "confirm-email")
    await _change_email(users, person, person.email.replace("person-", "second-"))
    assert (await _confirm(users, first)).status_code == 400


async def test_a_new_password_voids_a_pending_email_change_link(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    """Someone who knew the old password may have asked to move the account to their address: whoever changes the
    password (the person who got the notice, say) must not leave that link working."""
    person = await sign_up(users)
    thief_address = person.email.replace("person-", "thief-")
    assert (await _change_email(users, person, thief_address)).status_code == 202
    token = await link_in_mail(thief_address, "confirm-email")

    assert (await _change_password(users, person, person.password)).status_code == 204

    assert (await _confirm(users, token)).status_code == 400
    me = await users.client.get("/api/users/me", headers=person.auth)
    assert me.json()["email"] == person.email


async def test_a_password_reset_voids_a_pending_email_change_link(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    thief_address = person.email.replace("person-", "robber-")
    assert (await _change_email(users, person, thief_address)).status_code == 202
    change = await link_in_mail(thief_address, "confirm-email")
    assert (await users.client.post("/api/auth/password-reset", json={"email": person.email})).status_code == 202
    reset = await link_in_mail(person.email, "reset-password", count=3)  # after the sign-up and the notice
    body = {"token": reset, "password": NEW_PASSWORD}
    assert (await users.client.post("/api/auth/password-reset/confirm", json=body)).status_code == 204

    assert (await _confirm(users, change)).status_code == 400
    assert (await _log_in(users, person.email, NEW_PASSWORD)).status_code == 200


async def test_a_change_link_expires_after_a_day(
    users: RunningGatherly, link_in_mail: LinkInMail, clock: FrozenClock
) -> None:
    person = await sign_up(users)
    new_email = person.email.replace("person-", "late-")
    await _change_email(users, person, new_email)
    token = await link_in_mail(new_email, "confirm-email")
    clock.advance(timedelta(hours=24, seconds=1))
    assert (await _confirm(users, token)).status_code == 400


async def test_an_email_change_needs_the_password_and_a_new_valid_address(users: RunningGatherly) -> None:
    person = await sign_up(users)
    wrong = await _change_email(users, person, "new@example.org", password="not my password at all")
    assert wrong.status_code == 403 and _field(wrong) == "password"
    for address in ("not-an-address", person.email, "a\u202e@example.org x"):
        response = await _change_email(users, person, address)
        assert response.status_code == 422 and _field(response) == "new_email", address
    assert not mail_to(users.mail_dir, "new@example.org")


async def test_a_confirm_email_token_that_is_junk_or_of_another_kind_is_refused(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    await users.client.post("/api/auth/password-reset", json={"email": person.email})
    reset_link = await link_in_mail(person.email, "reset-password", count=2)
    for token in ("junk", reset_link):
        response = await _confirm(users, token)
        assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "body",
    [
        {"new_email": "nul\u0000@example.org", "password": "correct horse battery staple"},
        {"new_email": "\ud800@example.org", "password": "correct horse battery staple"},
        {"new_email": "x" * 400 + "@example.org", "password": "correct horse battery staple"},
        {"new_email": ["a@example.org"], "password": "correct horse battery staple"},
        {"new_email": "a@example.org", "password": None},
        {"new_email": "a@example.org", "password": "correct horse battery staple", "user_id": "someone-else"},
    ],
    ids=["nul", "lone-surrogate", "huge", "list", "null-password", "someone-elses-id"],
)
async def test_hostile_email_changes_are_a_422_naming_the_field(users: RunningGatherly, body: dict[str, Any]) -> None:
    person = await sign_up(users)
    # Sent as the JSON text itself: an HTTP client would refuse to encode a lone surrogate, a hostile one would not.
    raw = json.dumps(body).encode()
    headers = {**person.auth, "Content-Type": "application/json"}
    response = await users.client.post("/api/users/me/email", content=raw, headers=headers)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"].split(".")[-1] in {"new_email", "password", "user_id"}
    me = await users.client.get("/api/users/me", headers=person.auth)
    assert me.json()["email"] == person.email
