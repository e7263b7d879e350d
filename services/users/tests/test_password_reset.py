"""Password reset through HTTP: the emailed link, single use, expiry, sessions ended, no account enumeration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gatherly.app.devmail import text_of
from gatherly.app.testing import RunningGatherly, mail_to, sign_up, wait_for_mail
from gatherly.kernel.clock import FrozenClock

LinkInMail = Callable[..., Awaitable[str]]
NEW_PASSWORD = "a brand new passphrase"

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _ask(users: RunningGatherly, email: str) -> Any:
    return await users.client.post("/api/auth/password-reset", json={"email": email})


async def _reset(users: RunningGatherly, token: str, password: str = NEW_PASSWORD) -> Any:
    return await users.client.post("/api/auth/password-reset/confirm", json={"token": token, "password": password})


async def _log_in(users: RunningGatherly, email: str, password: str) -> Any:
    return await users.client.post("/api/auth/login", json={"email": email, "password": password})


async def test_a_reset_link_sets_a_new_password_and_ends_every_session(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    second_session = (await _log_in(users, person.email, person.password)).json()

    response = await _ask(users, person.email.upper())
    assert response.status_code == 202 and response.json() == {}
    messages = await wait_for_mail(users, person.email, count=2)
    assert messages[-1]["Subject"] == "Reset your Gatherly password"
    assert f"{users.settings.effective_public_url}/reset-password?token=" in text_of(messages[-1])
    assert "for 1 hour." in text_of(messages[-1]) and "hour(s)" not in text_of(messages[-1])
    token = await link_in_mail(person.email, "reset-password", count=2)

    assert (await _reset(users, token)).status_code == 204
    assert (await _log_in(users, person.email, person.password)).status_code == 401
    assert (await _log_in(users, person.email, NEW_PASSWORD)).status_code == 200
    for refresh_token in (person.refresh_token, second_session["refresh_token"]):
        refreshed = await users.client.post("/api/auth/refresh", json={"refresh_token": refresh_token})
        assert refreshed.status_code == 401


async def test_a_reset_for_an_unknown_address_answers_the_same_and_sends_nothing(users: RunningGatherly) -> None:
    person = await sign_up(users)
    known, unknown = await _ask(users, person.email), await _ask(users, "nobody@example.org")
    malformed = await _ask(users, "nobody")
    assert (
        (known.status_code, known.json())
        == (unknown.status_code, unknown.json())
        == (malformed.status_code, malformed.json())
    )
    await wait_for_mail(users, person.email, count=2)
    assert mail_to(users.mail_dir, "nobody@example.org") == []


async def test_a_reset_link_works_once(users: RunningGatherly, link_in_mail: LinkInMail) -> None:
    person = await sign_up(users)
    await _ask(users, person.email)
    token = await link_in_mail(person.email, "reset-password", count=2)
    assert (await _reset(users, token)).status_code == 204
    assert (await _reset(users, token, "yet another passphrase")).status_code == 400


async def test_a_reset_link_expires_after_an_hour(
    users: RunningGatherly, clock: FrozenClock, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    await _ask(users, person.email)
    token = await link_in_mail(person.email, "reset-password", count=2)
    clock.advance(timedelta(hours=1, seconds=1))
    assert (await _reset(users, token)).status_code == 400
    assert (await _log_in(users, person.email, person.password)).status_code == 200


async def test_a_weak_new_password_is_refused_and_the_link_stays_usable(
    users: RunningGatherly, link_in_mail: LinkInMail
) -> None:
    person = await sign_up(users)
    await _ask(users, person.email)
    token = await link_in_mail(person.email, "reset-password", count=2)
    weak = await _reset(users, token, "password123")
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "password"
    assert (await _reset(users, token)).status_code == 204


async def test_a_reset_lifts_a_lockout(users: RunningGatherly, clock: FrozenClock, link_in_mail: LinkInMail) -> None:
    person = await sign_up(users)
    for _ in range(5):
        await _log_in(users, person.email, "not the password at all")
    assert (await _log_in(users, person.email, person.password)).status_code == 429
    await _ask(users, person.email)
    assert (await _reset(users, await link_in_mail(person.email, "reset-password", count=2))).status_code == 204
    assert (await _log_in(users, person.email, NEW_PASSWORD)).status_code == 200


async def test_password_resets_are_limited_per_client_address(own_users: RunningGatherly) -> None:
    # A frozen clock: the bucket refills one request every 2 s, and a loaded machine may take that long for 31.
    clock = own_users.process.platform.clock = FrozenClock(datetime.now(UTC))
    answers = [(await _ask(own_users, f"p{n}@example.org")).status_code for n in range(31)]
    assert answers == [202] * 30 + [429]
    clock.advance(timedelta(seconds=2))
    assert (await _ask(own_users, "one-more@example.org")).status_code == 202
