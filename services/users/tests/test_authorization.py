"""Who may call what in the users service, endpoint by endpoint: no token, a garbage token, and a valid token of an
account that is being deleted or is gone (401 problem+json, never 404) — plus the deletion endpoints that stay open
to follow a deletion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gatherly.app.testing import Person, RunningGatherly, sign_up
from gatherly.contracts.users import UserDeleted
from gatherly.users import service
from gatherly.users.store import UsersUnitOfWork

Published = Callable[..., Awaitable[list[Any]]]

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "correct horse battery staple"
# Every users endpoint that acts on the caller's own account, with a body that would be accepted.
OWN_ACCOUNT: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/users/me", None),
    ("PATCH", "/api/users/me", {"bio": "still here"}),
    ("POST", "/api/users/me/password", {"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
    ("POST", "/api/users/me/email", {"new_email": "elsewhere@example.org", "password": PASSWORD}),
]
DELETION: list[tuple[str, str, dict[str, Any] | None]] = [
    ("DELETE", "/api/users/me", None),
    ("GET", "/api/users/me/deletion", None),
]


async def _call(users: RunningGatherly, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await users.client.request(method, path, json=body, headers=headers)


def _is_401_problem(response: Any) -> bool:
    return (
        response.status_code == 401
        and response.headers["content-type"] == "application/problem+json"
        and response.headers["www-authenticate"].startswith("Bearer")
    )


@pytest.mark.parametrize(("method", "path", "body"), OWN_ACCOUNT + DELETION)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}], ids=["anonymous", "garbage"])
async def test_without_a_valid_token_every_own_account_endpoint_is_401(
    users: RunningGatherly, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    assert _is_401_problem(await _call(users, method, path, body, headers))


async def _deleted(users: RunningGatherly, published: Published) -> Person:
    person = await sign_up(users, password=PASSWORD)
    assert (await users.client.delete("/api/users/me", headers=person.auth)).status_code == 202
    await published("user.deleted", user_id=person.user_id)
    return person


@pytest.mark.parametrize(("method", "path", "body"), OWN_ACCOUNT)
async def test_a_token_of_an_erased_account_is_401_not_404(
    users: RunningGatherly, published: Published, method: str, path: str, body: Any
) -> None:
    person = await _deleted(users, published)
    # Erased here (only the users service runs: nobody else answers, so the saga itself stays pending).
    assert (await users.client.get("/api/users/me/deletion", headers=person.auth)).json()["answered"] == ["users"]
    assert _is_401_problem(await _call(users, method, path, body, person.auth))


@pytest.mark.parametrize(("method", "path", "body"), OWN_ACCOUNT)
async def test_a_token_of_an_account_being_deleted_is_401(
    users: RunningGatherly, published: Published, monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: Any
) -> None:
    async def lost(uow: UsersUnitOfWork, event: UserDeleted) -> None:
        return None  # the erasure has not happened yet

    monkeypatch.setattr(service, "erase_account", lost)
    person = await _deleted(users, published)
    assert (await users.client.get("/api/users/me/deletion", headers=person.auth)).json()["status"] == "pending"
    assert _is_401_problem(await _call(users, method, path, body, person.auth))
    # Nobody sees the profile of an account being deleted either.
    assert (await users.client.get(f"/api/users/{person.user_id}")).status_code == 404
    # The deletion itself can still be followed (and asked for again, which changes nothing).
    assert (await users.client.delete("/api/users/me", headers=person.auth)).status_code == 202


async def test_a_public_profile_needs_no_token(users: RunningGatherly) -> None:
    person = await sign_up(users)
    assert (await users.client.get(f"/api/users/{person.user_id}")).status_code == 200
