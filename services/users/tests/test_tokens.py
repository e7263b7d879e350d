"""Access and refresh tokens through HTTP: what is accepted, every way a forged one is refused, rotation,
reuse detection, logout, and signing-key rotation."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from gatherly.app.cli import app as cli
from gatherly.app.testing import Person, RunningGatherly, running_gatherly, sign_up
from gatherly.kernel.clock import FrozenClock
from gatherly.users import service
from gatherly.users.store import StoredKey, reading, unit_of_work

from .conftest import CHEAP_HASHES  # type: ignore[import-not-found]

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _me(users: RunningGatherly, token: str) -> Any:
    return await users.client.get("/api/users/me", headers=_bearer(token))


async def _refresh(users: RunningGatherly, refresh_token: str) -> Any:
    return await users.client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


async def _keys(users: RunningGatherly) -> list[StoredKey]:
    async with reading(users.process.host("users").context.db) as stores:
        return await stores.signing_keys.all()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(users: RunningGatherly, person: Person, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    settings = users.settings
    return {
        "sub": person.user_id,
        "iss": settings.effective_issuer,
        "aud": settings.jwt_audience,
        "exp": now + 600,
        **changes,
    }


# --- access tokens ------------------------------------------------------------------------------------------


async def test_an_access_token_names_its_user_issuer_audience_expiry_and_a_published_key(
    users: RunningGatherly,
) -> None:
    person = await sign_up(users)
    header = jwt.get_unverified_header(person.access_token)
    claims = jwt.decode(person.access_token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    assert claims["sub"] == person.user_id
    assert claims["iss"] == users.settings.effective_issuer == "http://localhost:8000"
    assert claims["aud"] == "gatherly"
    assert claims["exp"] - claims["iat"] == 15 * 60

    jwks = (await users.client.get("/.well-known/jwks.json")).json()
    (key,) = jwks["keys"]
    assert key["kid"] == header["kid"] and key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" not in key
    assert (await _me(users, person.access_token)).status_code == 200


async def test_no_token_or_garbage_gets_401(users: RunningGatherly) -> None:
    assert (await users.client.get("/api/users/me")).status_code == 401
    assert (await _me(users, "garbage")).status_code == 401
    basic = await users.client.get("/api/users/me", headers={"Authorization": "Basic YW5uOnB3"})
    assert basic.status_code == 401


async def test_a_tampered_token_gets_401(users: RunningGatherly) -> None:
    person = await sign_up(users)
    intruder = await sign_up(users)
    header, _, signature = person.access_token.split(".")
    forged = f"{header}.{_b64(_claims(users, intruder))}.{signature}"
    assert (await _me(users, forged)).status_code == 401


async def test_an_unsigned_alg_none_token_gets_401(users: RunningGatherly) -> None:
    person = await sign_up(users)
    kid = jwt.get_unverified_header(person.access_token)["kid"]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims(users, person))}."
    assert (await _me(users, unsigned)).status_code == 401


async def test_an_hmac_token_keyed_with_the_public_key_gets_401(users: RunningGatherly) -> None:
    person = await sign_up(users)
    (key,) = (await users.client.get("/.well-known/jwks.json")).json()["keys"]
    forged = jwt.encode(_claims(users, person), key["x"], algorithm="HS256", headers={"kid": key["kid"]})
    assert (await _me(users, forged)).status_code == 401


async def test_an_expired_token_gets_401(users: RunningGatherly, clock: FrozenClock) -> None:
    person = await sign_up(users)
    clock.advance(timedelta(minutes=-16))  # issued 16 minutes ago: expired a minute ago
    login = await users.client.post("/api/auth/login", json={"email": person.email, "password": person.password})
    old_token = login.json()["access_token"]
    response = await _me(users, old_token)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_tokens_for_another_audience_or_issuer_get_401_though_signed_with_our_key(users: RunningGatherly) -> None:
    person = await sign_up(users)
    (key,) = await _keys(users)
    private = serialization.load_pem_private_key(key.private_key.encode(), None)
    assert isinstance(private, Ed25519PrivateKey)

    def signed(**changes: Any) -> str:
        return jwt.encode(_claims(users, person, **changes), private, algorithm="EdDSA", headers={"kid": key.kid})

    assert (await _me(users, signed())).status_code == 200  # the control: our key, right claims
    assert (await _me(users, signed(aud="another-app"))).status_code == 401
    assert (await _me(users, signed(iss="https://evil.example.org"))).status_code == 401


async def test_a_token_signed_with_another_key_gets_401(users: RunningGatherly) -> None:
    person = await sign_up(users)
    kid = jwt.get_unverified_header(person.access_token)["kid"]
    stranger = Ed25519PrivateKey.generate()
    for claimed_kid in (kid, "some-other-kid"):
        forged = jwt.encode(_claims(users, person), stranger, algorithm="EdDSA", headers={"kid": claimed_kid})
        assert (await _me(users, forged)).status_code == 401


# --- refresh tokens -----------------------------------------------------------------------------------------


async def test_refreshing_rotates_the_pair(users: RunningGatherly) -> None:
    person = await sign_up(users)
    response = await _refresh(users, person.refresh_token)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    pair = response.json()
    assert pair["refresh_token"] != person.refresh_token and pair["token_type"] == "Bearer"
    assert (await _me(users, pair["access_token"])).status_code == 200
    assert (await _refresh(users, pair["refresh_token"])).status_code == 200


async def test_reusing_a_spent_refresh_token_after_the_grace_window_revokes_the_whole_family(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    person = await sign_up(users)
    other_session = (
        await users.client.post("/api/auth/login", json={"email": person.email, "password": person.password})
    ).json()
    rotated = (await _refresh(users, person.refresh_token)).json()

    clock.advance(timedelta(seconds=users.settings.refresh_grace_seconds))
    reuse = await _refresh(users, person.refresh_token)  # a stolen copy comes back
    assert reuse.status_code == 401
    assert (await _refresh(users, rotated["refresh_token"])).status_code == 401  # the family is dead
    assert (await _refresh(users, other_session["refresh_token"])).status_code == 200  # other sessions live on


async def test_within_the_grace_window_a_spent_refresh_token_returns_the_same_new_pair(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    assert users.settings.refresh_grace_seconds == 10
    person = await sign_up(users)
    first = (await _refresh(users, person.refresh_token)).json()
    clock.advance(timedelta(seconds=9))  # the second tab, a moment later
    second = await _refresh(users, person.refresh_token)
    assert second.status_code == 200 and second.headers["cache-control"] == "no-store"
    assert (second.json()["access_token"], second.json()["refresh_token"]) == (
        first["access_token"],
        first["refresh_token"],
    )
    assert second.json()["expires_in"] == first["expires_in"] - 9
    assert (await _me(users, first["access_token"])).status_code == 200
    # The family lives on: the shared new token rotates normally.
    assert (await _refresh(users, first["refresh_token"])).status_code == 200


async def test_two_tabs_refreshing_at_once_both_get_the_same_new_pair(users: RunningGatherly) -> None:
    person = await sign_up(users)
    answers = await asyncio.gather(*(_refresh(users, person.refresh_token) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert len({(a.json()["access_token"], a.json()["refresh_token"]) for a in answers}) == 1
    assert (await _refresh(users, answers[0].json()["refresh_token"])).status_code == 200


async def test_a_reuse_after_the_window_also_kills_the_pair_the_window_handed_out(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    person = await sign_up(users)
    await _refresh(users, person.refresh_token)
    repeated = (await _refresh(users, person.refresh_token)).json()
    clock.advance(timedelta(seconds=11))
    assert (await _refresh(users, person.refresh_token)).status_code == 401
    assert (await _refresh(users, repeated["refresh_token"])).status_code == 401


async def test_a_repeat_within_the_window_cannot_revive_a_session_logged_out_meanwhile(
    users: RunningGatherly,
) -> None:
    person = await sign_up(users)
    rotated = (await _refresh(users, person.refresh_token)).json()
    await users.client.post("/api/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert (await _refresh(users, person.refresh_token)).status_code == 401


async def test_with_no_grace_window_a_second_refresh_at_once_revokes_the_family(tmp_path: Path) -> None:
    async with running_gatherly(
        tmp_path / "data", services=["users"], refresh_grace_seconds=0, **CHEAP_HASHES
    ) as users:
        person = await sign_up(users)
        rotated = (await _refresh(users, person.refresh_token)).json()
        assert (await _refresh(users, person.refresh_token)).status_code == 401
        assert (await _refresh(users, rotated["refresh_token"])).status_code == 401


async def test_an_unknown_refresh_token_gets_401(users: RunningGatherly) -> None:
    assert (await _refresh(users, "not-a-token")).status_code == 401


async def test_a_refresh_token_expires_after_30_days(users: RunningGatherly, clock: FrozenClock) -> None:
    person = await sign_up(users)
    login = await users.client.post("/api/auth/login", json={"email": person.email, "password": person.password})
    clock.advance(timedelta(days=30, seconds=1))
    assert (await _refresh(users, login.json()["refresh_token"])).status_code == 401


async def test_logging_out_revokes_the_refresh_token(users: RunningGatherly) -> None:
    person = await sign_up(users)
    rotated = (await _refresh(users, person.refresh_token)).json()
    response = await users.client.post("/api/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert response.status_code == 204
    assert (await _refresh(users, rotated["refresh_token"])).status_code == 401
    unknown = await users.client.post("/api/auth/logout", json={"refresh_token": "never-issued"})
    assert unknown.status_code == 204


# --- signing keys -------------------------------------------------------------------------------------------


async def test_a_rotated_key_is_published_at_once_signs_once_active_and_old_tokens_keep_verifying(
    own_users: RunningGatherly,
) -> None:
    users = own_users
    clock = FrozenClock(datetime.now(UTC))
    users.process.platform.clock = clock
    person = await sign_up(users)
    old_kid = jwt.get_unverified_header(person.access_token)["kid"]
    # The verifier refetches the JWKS on an unknown kid at most every few (real) seconds; here at once.
    users.process.platform.verifier.min_refetch_seconds = 0

    # Verification uses the real time, so the frozen clock may run ahead of it by less than the leeway only.
    settings = users.settings.model_copy(update={"signing_key_activation_seconds": 5})
    rotation = await service.rotate_signing_keys(unit_of_work(users.process.host("users").context), settings)
    jwks = (await users.client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, rotation.new_kid}

    async def kid_of_a_new_login() -> str:
        login = await users.client.post("/api/auth/login", json={"email": person.email, "password": person.password})
        token = login.json()["access_token"]
        assert (await _me(users, token)).status_code == 200
        return str(jwt.get_unverified_header(token)["kid"])

    assert await kid_of_a_new_login() == old_kid  # not active yet: verifiers may not have it
    clock.advance(timedelta(seconds=5))
    assert await kid_of_a_new_login() == rotation.new_kid
    assert (await _me(users, person.access_token)).status_code == 200  # issued with the old key: still good

    # Once no token of the old key can be alive, the next rotation retires it from the JWKS.
    clock.advance(timedelta(minutes=17))
    later = await service.rotate_signing_keys(unit_of_work(users.process.host("users").context), settings)
    assert later.retired == [old_kid]
    jwks = (await users.client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {rotation.new_kid, later.new_kid}


async def test_the_keys_rotate_command_adds_a_key(tmp_path: Path) -> None:
    env = {"GATHERLY_DATA_DIR": str(tmp_path / "data")}
    # The command runs its own event loop, as it does in its own process: off this test's loop.
    first = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "rotate"], env=env)
    assert first.exit_code == 0, first.output
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("EdDSA") == 2  # the first key (made on migrating) and the rotated-in one


async def test_a_key_rotated_by_another_process_is_used_by_the_running_service(tmp_path: Path) -> None:
    async with running_gatherly(
        tmp_path / "data", services=["users"], signing_key_activation_seconds=0, **CHEAP_HASHES
    ) as users:
        person = await sign_up(users)
        users.process.platform.verifier.min_refetch_seconds = 0
        # The command runs its own event loop, as it does in its own process.
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["keys", "rotate"],
            env={"GATHERLY_DATA_DIR": str(tmp_path / "data"), "GATHERLY_SIGNING_KEY_ACTIVATION_SECONDS": "0"},
        )
        assert result.exit_code == 0, result.output
        login = await users.client.post("/api/auth/login", json={"email": person.email, "password": person.password})
        token = login.json()["access_token"]
        assert jwt.get_unverified_header(token)["kid"] != jwt.get_unverified_header(person.access_token)["kid"]
        assert (await _me(users, token)).status_code == 200


async def test_tokens_expired_over_a_day_ago_are_deleted_and_stay_refused(
    users: RunningGatherly, clock: FrozenClock
) -> None:
    person = await sign_up(users)
    clock.advance(timedelta(days=31, seconds=1))
    assert await service.forget_expired(unit_of_work(users.process.host("users").context)) >= 2  # refresh + link
    assert (await _refresh(users, person.refresh_token)).status_code == 401
    assert await service.forget_expired(unit_of_work(users.process.host("users").context)) == 0
