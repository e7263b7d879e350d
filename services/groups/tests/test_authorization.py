"""Who may call what: every endpoint of the groups API against every relation a caller can have to a group
(anonymous, outsider, pending, banned, member and each leader role), through HTTP.

Calls that are expected to succeed and change the group get a fresh group each; refused calls share one, so a
refusal that wrongly went through would also break the rows after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALLERS = ("anonymous", "outsider", "pending", "banned", "member", "event_organizer", "co_organizer", "organizer")
MEMBERS = ("member", "event_organizer", "co_organizer", "organizer")
MANAGERS = ("co_organizer", "organizer")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {group}, {pending}, {member}, {banned} and {invitation} are filled in from the cast
    body: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    changes_state: bool = True
    private: bool = False
    # Callers whose successful call leaves the group as it was (joining again is a no-op).
    idempotent_for: tuple[str, ...] = ()


def allowed(ok: int, who: tuple[str, ...], **others: int) -> dict[str, int]:
    """`ok` for the callers in `who`; 401 for anonymous, 403 for everyone else, unless `others` says otherwise."""
    refused = {caller: others.get(caller, 401 if caller == "anonymous" else 403) for caller in CALLERS}
    return {caller: ok if caller in who else refused[caller] for caller in CALLERS}


EVERYONE = {caller: 200 for caller in CALLERS}

MATRIX: dict[str, tuple[Endpoint, dict[str, int]]] = {
    "list groups": (Endpoint("GET", "/api/groups", changes_state=False), EVERYONE),
    "create a group": (
        Endpoint("POST", "/api/groups", {"name": "Another"}, changes_state=False),
        allowed(201, CALLERS[1:]),
    ),
    "get a public group": (Endpoint("GET", "/api/groups/{group}", changes_state=False), EVERYONE),
    "get a private group": (Endpoint("GET", "/api/groups/{group}", changes_state=False, private=True), EVERYONE),
    "edit the group": (
        Endpoint("PATCH", "/api/groups/{group}", {"description": "Edited"}, changes_state=False),
        allowed(200, ("organizer",)),
    ),
    "delete the group": (Endpoint("DELETE", "/api/groups/{group}"), allowed(202, ("organizer",))),
    "join": (
        Endpoint("POST", "/api/groups/{group}/join", {"answers": ["Because"]}, idempotent_for=MEMBERS),
        allowed(200, ("outsider", *MEMBERS), pending=409),
    ),
    "step down": (
        Endpoint("POST", "/api/groups/{group}/members/me/step-down", idempotent_for=("member",)),
        allowed(
            200, ("member", "event_organizer", "co_organizer"), outsider=404, pending=404, banned=404, organizer=409
        ),
    ),
    "see my own requests": (
        Endpoint("GET", "/api/groups/requests/mine", changes_state=False),
        allowed(200, CALLERS[1:]),
    ),
    "see bans": (Endpoint("GET", "/api/groups/{group}/bans", changes_state=False), allowed(200, MANAGERS)),
    "lift a ban": (Endpoint("DELETE", "/api/groups/{group}/bans/{banned}"), allowed(204, MANAGERS)),
    "invite": (
        Endpoint("POST", "/api/groups/{group}/invitations", {"max_uses": 5}, changes_state=False),
        allowed(201, MANAGERS),
    ),
    "see invitations": (
        Endpoint("GET", "/api/groups/{group}/invitations", changes_state=False),
        allowed(200, MANAGERS),
    ),
    "revoke an invitation": (
        Endpoint("DELETE", "/api/groups/{group}/invitations/{invitation}"),
        allowed(204, MANAGERS),
    ),
    "leave": (
        Endpoint("DELETE", "/api/groups/{group}/members/me"),
        allowed(204, ("pending", "member", "event_organizer", "co_organizer"), outsider=404, banned=404, organizer=409),
    ),
    "see members of a public group": (
        Endpoint("GET", "/api/groups/{group}/members", changes_state=False),
        EVERYONE,
    ),
    "see members of a private group": (
        Endpoint("GET", "/api/groups/{group}/members", changes_state=False, private=True),
        allowed(200, MEMBERS),
    ),
    "see join requests": (
        Endpoint("GET", "/api/groups/{group}/requests", changes_state=False),
        allowed(200, MANAGERS),
    ),
    "approve a request": (Endpoint("POST", "/api/groups/{group}/requests/{pending}/approve"), allowed(200, MANAGERS)),
    "deny a request": (Endpoint("POST", "/api/groups/{group}/requests/{pending}/deny"), allowed(200, MANAGERS)),
    "change a role": (
        Endpoint("PUT", "/api/groups/{group}/members/{member}/role", {"role": "event_organizer"}),
        allowed(200, MANAGERS),
    ),
    "remove a member": (Endpoint("DELETE", "/api/groups/{group}/members/{member}"), allowed(204, MANAGERS)),
    "ban a member": (
        Endpoint("DELETE", "/api/groups/{group}/members/{member}", params={"ban": "true"}),
        allowed(204, MANAGERS),
    ),
    "announce": (
        Endpoint("POST", "/api/groups/{group}/announcements", {"subject": "Hi", "body": "Hi all"}, changes_state=False),
        allowed(202, MANAGERS),
    ),
}

CASES = [
    pytest.param(endpoint, caller, expected, id=f"{name} as {caller}")
    for name, (endpoint, statuses) in MATRIX.items()
    for caller, expected in statuses.items()
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cast_people(shared_api: Any) -> dict[str, Any]:
    names = CALLERS[1:]
    return dict(zip(names, await shared_api.people(*names), strict=True))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_casts(shared_api: Any, cast_people: dict[str, Any]) -> dict[bool, Any]:
    """Keyed by `private`."""
    return {
        False: await shared_api.cast(cast_people, name="Public cast"),
        True: await shared_api.cast(cast_people, name="Private cast", visibility="private"),
    }


@pytest.mark.parametrize(("endpoint", "caller", "expected"), CASES)
async def test_authorization_matrix(
    shared_api: Any,
    cast_people: dict[str, Any],
    shared_casts: dict[bool, Any],
    endpoint: Endpoint,
    caller: str,
    expected: int,
) -> None:
    succeeds = 200 <= expected < 300
    if endpoint.changes_state and succeeds and caller not in endpoint.idempotent_for:
        cast = await shared_api.cast(cast_people, visibility="private" if endpoint.private else "public")
    else:
        cast = shared_casts[endpoint.private]
    path = endpoint.path.format(
        group=cast.id,
        pending=cast_people["pending"].user_id,
        member=cast_people["member"].user_id,
        banned=cast_people["banned"].user_id,
        invitation=cast.invitation_id,
    )
    headers = {} if caller == "anonymous" else cast_people[caller].auth
    response = await shared_api.client.request(
        endpoint.method, path, json=endpoint.body, params=endpoint.params, headers=headers
    )
    assert response.status_code == expected, response.text
    if not succeeds:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == expected


MY_MEMBERSHIP = {
    "anonymous": None,
    "outsider": None,
    "pending": {"role": None, "status": "pending"},
    "banned": {"role": None, "status": "banned"},
    "member": {"role": "member", "status": "member"},
    "event_organizer": {"role": "event_organizer", "status": "member"},
    "co_organizer": {"role": "co_organizer", "status": "member"},
    "organizer": {"role": "organizer", "status": "member"},
}


@pytest.mark.parametrize(("caller", "expected"), MY_MEMBERSHIP.items(), ids=list(MY_MEMBERSHIP))
async def test_a_group_tells_each_caller_their_own_membership(
    shared_api: Any, cast_people: dict[str, Any], shared_casts: dict[bool, Any], caller: str, expected: Any
) -> None:
    person = None if caller == "anonymous" else cast_people[caller]
    for cast in shared_casts.values():
        assert (await shared_api.get(cast.id, person))["my_membership"] == expected
