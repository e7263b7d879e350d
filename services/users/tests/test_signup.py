"""Sign-up and email confirmation through HTTP: links, single use, expiry, and no account enumeration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from gatherly.app.devmail import text_of
from gatherly.app.testing import RunningGatherly, mail_to, wait_for_mail
from gatherly.kernel.clock import FrozenClock
from gatherly.users.service import Identity

LinkInMail = Callable[..., Awaitable[str]]
Published = Callable[..., Awaitable[list[Any]]]
PASSWORD = "a long enough passphrase"

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _sign_up(users: RunningGatherly, email: str, password: str = PASSWORD, name: str = "Ann") -> Any:
    return await users.client.post(
        "/api/auth/signup", json={"email": email, "password": password, "display_name": name}
    )


async def _log_in(users: RunningGatherly, email: str, password: str = PASSWORD) -> Any:
    return await users.client.post("/api/auth/login", json={"email": email, "password": password})


async def test_signing_up_emails_a_link_whose_confirmation_lets_the_person_log_in(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    response = await _sign_up(users, "Ann@Example.org")
    assert response.status_code == 202 and response.json() == {}
    (message,) = await wait_for_mail(users, "ann@example.org")
    assert message["Subject"] == "Confirm your email address"
    assert message.get_body(preferencelist=("html",)) is not None
    assert f"http://localhost:{users.settings.port}/confirm?token=" in text_of(message)
    assert "works once, for 1 day." in text_of(message)  # a proper plural, not "24 hour(s)"

    assert (await _log_in(users, "ann@example.org")).status_code == 403  # not confirmed yet
    token = await link_in_mail("ann@example.org", "confirm")
    confirmed = await users.client.post("/api/auth/confirm", json={"token": token})
    assert confirmed.status_code == 200

    login = await _log_in(users, "ANN@example.org ")
    assert login.status_code == 200
    body = login.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert login.headers["cache-control"] == "no-store"


async def test_a_confirmation_link_works_once(users: RunningGatherly, link_in_mail: LinkInMail) -> None:
    await _sign_up(users, "bob@example.org")
    token = await link_in_mail("bob@example.org")
    assert (await users.client.post("/api/auth/confirm", json={"token": token})).status_code == 200
    again = await users.client.post("/api/auth/confirm", json={"token": token})
    assert again.status_code == 400
    assert again.headers["content-type"] == "application/problem+json"


async def test_a_confirmation_link_expires_after_24_hours(
    users: RunningGatherly, clock: FrozenClock, link_in_mail: LinkInMail
) -> None:
    await _sign_up(users, "cat@example.org")
    token = await link_in_mail("cat@example.org")
    clock.advance(timedelta(hours=24, seconds=1))
    assert (await users.client.post("/api/auth/confirm", json={"token": token})).status_code == 400


async def test_an_unknown_confirmation_token_is_refused(users: RunningGatherly) -> None:
    assert (await users.client.post("/api/auth/confirm", json={"token": "made-up"})).status_code == 400


async def test_signing_up_with_a_taken_address_answers_the_same_and_tells_the_owner(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    await _sign_up(users, "dan@example.org", name="Dan")
    await users.client.post("/api/auth/confirm", json={"token": await link_in_mail("dan@example.org")})

    taken = await _sign_up(users, "dan@example.org", password="the intruder's choice", name="Mallory")
    fresh = await _sign_up(users, "eve@example.org")
    assert (taken.status_code, taken.json()) == (fresh.status_code, fresh.json()) == (202, {})

    messages = await wait_for_mail(users, "dan@example.org", count=2)
    assert messages[-1]["Subject"] == "You already have a Gatherly account"
    assert "Hi Dan," in text_of(messages[-1])  # the owner's name, not what the stranger typed
    assert "/confirm?token=" not in text_of(messages[-1])
    assert (await _log_in(users, "dan@example.org")).status_code == 200  # the password is unchanged
    assert (await _log_in(users, "dan@example.org", "the intruder's choice")).status_code == 401


async def test_a_taken_address_costs_the_same_password_hash_as_a_new_one(
    users: RunningGatherly, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity: Identity = users.process.host("users").context.extras["identity"]
    hashed: list[str] = []
    original = identity.passwords.hash

    async def counting(password: str) -> str:
        hashed.append(password)
        return await original(password)

    monkeypatch.setattr(identity.passwords, "hash", counting)
    await _sign_up(users, "fay@example.org")
    await _sign_up(users, "fay@example.org", password="another long passphrase")
    assert len(hashed) == 2


async def test_signing_up_again_before_confirming_sends_a_link_for_the_newest_credentials(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    await _sign_up(users, "gus@example.org", password="the first passphrase", name="Gus")
    first = await link_in_mail("gus@example.org", count=1)
    await _sign_up(users, "gus@example.org", password="the second passphrase", name="Gustav")
    second = await link_in_mail("gus@example.org", count=2)
    assert first != second

    # Whoever owns the mailbox confirms the sign-up they recognise: its credentials are the ones that count.
    assert (await users.client.post("/api/auth/confirm", json={"token": second})).status_code == 200
    assert (await _log_in(users, "gus@example.org", "the first passphrase")).status_code == 401
    login = await _log_in(users, "gus@example.org", "the second passphrase")
    me = await users.client.get("/api/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.json()["display_name"] == "Gustav"
    # Confirming spent every other confirmation link of the account.
    assert (await users.client.post("/api/auth/confirm", json={"token": first})).status_code == 400


async def test_short_long_and_common_passwords_are_refused_at_sign_up(users: RunningGatherly) -> None:
    for password in ("short", "x" * 129, "Password123", "qwertyuiop", " " * 12, "\u3000" * 10):
        response = await _sign_up(users, "hal@example.org", password=password)
        assert response.status_code == 422, password
        assert response.json()["errors"][0]["field"] == "password"
    assert mail_to(users.mail_dir, "hal@example.org") == []


async def test_a_sign_up_without_a_proper_email_or_name_is_refused(users: RunningGatherly) -> None:
    assert (await _sign_up(users, "not-an-email")).status_code == 422
    assert (await _sign_up(users, "ivy@example.org", name="   ")).status_code == 422
    for invisible in ("\u200b", "\u3164\u3164", "\u2800", "\u200d\u200c"):
        response = await _sign_up(users, "ivy@example.org", name=invisible)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "display_name", invisible
    assert mail_to(users.mail_dir, "ivy@example.org") == []
    missing = await users.client.post("/api/auth/signup", json={"email": "ivy@example.org"})
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json()["errors"]} == {"password", "display_name"}


async def test_registration_and_confirmation_are_published(
    users: RunningGatherly, link_in_mail: LinkInMail, published: Published
) -> None:
    await _sign_up(users, "jo@example.org", name="Jo")
    (registered,) = await published("user.registered", email="jo@example.org")
    assert registered.display_name == "Jo"
    assert await published("user.confirmed", user_id=registered.user_id) == []

    await users.client.post("/api/auth/confirm", json={"token": await link_in_mail("jo@example.org")})
    (confirmed,) = await published("user.confirmed", user_id=registered.user_id)
    (profile,) = await published("user.profile_updated", user_id=registered.user_id)
    assert confirmed.user_id == profile.user_id == registered.user_id
    assert (profile.email, profile.display_name, profile.avatar) == ("jo@example.org", "Jo", None)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/auth/signup", {"email": "x@example.org", "password": PASSWORD, "display_name": "X"}),
        ("/api/auth/confirm", {"token": "x"}),
        ("/api/auth/confirm-email", {"token": "x"}),
        ("/api/auth/login", {"email": "x@example.org", "password": PASSWORD}),
        ("/api/auth/refresh", {"refresh_token": "x"}),
        ("/api/auth/logout", {"refresh_token": "x"}),
        ("/api/auth/password-reset", {"email": "x@example.org"}),
        ("/api/auth/password-reset/confirm", {"token": "x", "password": PASSWORD}),
    ],
)
async def test_an_auth_body_with_a_field_it_does_not_take_is_refused_naming_it(
    users: RunningGatherly, path: str, body: dict[str, str]
) -> None:
    # A misspelt field silently ignored hides a client's bug (and a "remember_me" nobody implemented).
    response = await users.client.post(path, json={**body, "remember_me": True})

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["remember_me"]
