"""Every case of issue #8's "What was seen", through the whole stack on each database backend: none is a 500 any
more, none stores hostile text, and the boundary answers as the contract says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from gatherly.app.testing import Person, RunningGatherly, sign_up

pytestmark = pytest.mark.asyncio(loop_scope="module")

SURROGATE_JSON = '"a\\ud800b"'  # a lone surrogate, as a JSON escape (it cannot be encoded as UTF-8)


async def post_raw(running: RunningGatherly, path: str, raw_json: str, person: Person | None = None) -> Any:
    headers = {"content-type": "application/json", **(person.auth if person else {})}
    return await running.client.post(path, content=raw_json.encode(), headers=headers)


def fields_of(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [error["field"] for error in response.json()["errors"]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def organizer(gatherly: RunningGatherly) -> Person:
    return await sign_up(gatherly, display_name="Olga")


async def test_a_lone_surrogate_in_a_new_group_is_refused_not_a_500(
    gatherly: RunningGatherly, organizer: Person
) -> None:
    for field in ("name", "description", "city"):
        body = {"name": "ok"} | {field: "__S__"}
        response = await post_raw(
            gatherly, "/api/groups", json.dumps(body).replace('"__S__"', SURROGATE_JSON), organizer
        )
        assert fields_of(response) == [field]
    response = await post_raw(
        gatherly, "/api/groups", '{"name": "ok", "topics": ["x", ' + SURROGATE_JSON + "]}", organizer
    )
    assert fields_of(response) == ["topics.1"]


async def test_a_lone_surrogate_in_join_answers_is_refused_and_the_requests_list_keeps_working(
    gatherly: RunningGatherly, organizer: Person
) -> None:
    created = await gatherly.client.post(
        "/api/groups",
        json={"name": "Approvals", "join_policy": "approval", "questions": ["Why?"]},
        headers=organizer.auth,
    )
    group_id = created.json()["id"]
    applicant = await sign_up(gatherly, display_name="Abe")
    answer = await post_raw(
        gatherly, f"/api/groups/{group_id}/join", '{"answers": [' + SURROGATE_JSON + "]}", applicant
    )
    assert fields_of(answer) == ["answers.0"]
    requests = await gatherly.client.get(f"/api/groups/{group_id}/requests", headers=organizer.auth)
    assert requests.status_code == 200, requests.text


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/groups?q=%00", "q"),
        ("/api/groups?topic=a%00", "topic"),
        # On the stack nginx refuses a NUL in the path itself, with its own 400 page, before any service sees it.
        pytest.param("/api/groups/%00", "group", marks=pytest.mark.in_process_only),
        pytest.param("/api/groups/%00/members", "group", marks=pytest.mark.in_process_only),
        pytest.param("/api/users/%00", "user_id", marks=pytest.mark.in_process_only),
    ],
)
async def test_nul_in_a_query_or_path_is_refused_anonymously(gatherly: RunningGatherly, path: str, field: str) -> None:
    assert fields_of(await gatherly.client.get(path)) == [field]


async def test_nul_in_login_and_reset_emails_is_refused(gatherly: RunningGatherly) -> None:
    login = await gatherly.client.post("/api/auth/login", json={"email": "a\x00@example.org", "password": "x" * 12})
    reset = await gatherly.client.post("/api/auth/password-reset", json={"email": "a\x00@example.org"})
    assert fields_of(login) == ["email"] and fields_of(reset) == ["email"]


async def test_nul_in_group_fields_is_refused_and_nothing_is_stored(
    gatherly: RunningGatherly, organizer: Person
) -> None:
    for body, field in [
        ({"name": "a\x00b"}, "name"),
        ({"name": "ok", "description": "\x00"}, "description"),
        ({"name": "ok", "city": "Ly\x00on"}, "city"),
        ({"name": "ok", "questions": ["why\x00"]}, "questions.0"),
    ]:
        assert fields_of(await gatherly.client.post("/api/groups", json=body, headers=organizer.auth)) == [field]
    created = await gatherly.client.post("/api/groups", json={"name": "Patch me"}, headers=organizer.auth)
    patched = await gatherly.client.patch(
        f"/api/groups/{created.json()['id']}", json={"description": "x\x00"}, headers=organizer.auth
    )
    assert fields_of(patched) == ["description"]
    listed = await gatherly.client.get("/api/groups", params={"q": "Patch me"})
    assert all("\x00" not in json.dumps(item) for item in listed.json()["items"])


# On the stack the service refuses it as soon, but nginx keeps reading (and discarding) the rest of the body.
@pytest.mark.in_process_only
async def test_an_anonymous_200_mb_signup_is_refused_without_being_read(gatherly: RunningGatherly) -> None:
    sent = 0

    async def two_hundred_megabytes() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b" " * (1024 * 1024)
        yield b'{"email": "big@example.org", "password": "'
        for _ in range(200):
            sent += len(chunk)
            yield chunk
        yield b'", "display_name": "Big"}'

    response = await gatherly.client.post(
        "/api/auth/signup", content=two_hundred_megabytes(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert sent <= 2 * 1024 * 1024  # refused after the first MiB over, not after 200


@pytest.mark.in_process_only  # the merged document is the in-process gateway's; the stack's nginx has none
async def test_openapi_json_at_the_root_is_the_document_not_the_web_page(gatherly: RunningGatherly) -> None:
    response = await gatherly.client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == (await gatherly.client.get("/api/openapi.json")).json()


async def test_a_cors_preflight_on_the_api_is_answered(gatherly: RunningGatherly) -> None:
    origin = gatherly.public_url
    response = await gatherly.client.options(
        "/api/groups",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "POST" in response.headers["access-control-allow-methods"]
    stranger = await gatherly.client.options(
        "/api/groups", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in stranger.headers


@pytest.mark.in_process_only  # Swagger UI is the in-process gateway's page; the stack's nginx does not serve it
async def test_the_api_docs_page_serves_its_own_assets(gatherly: RunningGatherly) -> None:
    page = await gatherly.client.get("/api/docs")
    assert page.status_code == 200 and "http" not in page.text.replace('lang="en"', "")  # no CDN, no absolute URL
    for asset in ("/api/docs/assets/swagger-ui-bundle.js", "/api/docs/assets/swagger-ui.css", "/api/docs/init.js"):
        response = await gatherly.client.get(asset)
        assert response.status_code == 200 and len(response.content) > 0, asset
    assert "SwaggerUIBundle" in (await gatherly.client.get("/api/docs/assets/swagger-ui-bundle.js")).text


# The in-process gateway adds the headers to its own pages too (/, /livez, /api/docs); the stack's nginx does not.
@pytest.mark.in_process_only
@pytest.mark.parametrize("path", ["/api/docs", "/api/groups", "/api/groups/%00", "/", "/api/nothing", "/livez"])
async def test_every_response_carries_the_security_headers(gatherly: RunningGatherly, path: str) -> None:
    response = await gatherly.client.get(path)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
