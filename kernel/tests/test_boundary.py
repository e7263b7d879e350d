"""The boundary every service app gets (install_boundary): text policy, size limits, 500s that keep the connection."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import Message

from gatherly.kernel import text as text_module
from gatherly.kernel.boundary import install_boundary
from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.limits import DEFAULT_BODY_LIMIT, MAX_PATH_BYTES, MAX_QUERY_BYTES
from gatherly.kernel.settings import Settings
from gatherly.kernel.text import MAX_JSON_DEPTH, check_message, check_name, name_problem
from gatherly.kernel.web import RequestContextMiddleware, install_error_handlers


class Note(BaseModel):
    title: str
    tags: list[str] = []
    extra: dict[str, Any] = {}


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, service="test")
    install_boundary(app, "test", Settings(body_limits={"/uploads": 4 * DEFAULT_BODY_LIMIT}))
    seen: list[Any] = []
    app.state.seen = seen

    @app.post("/notes")
    async def create_note(note: Note) -> dict[str, Any]:
        seen.append(note)
        return note.model_dump()

    @app.get("/notes/{slug}")
    async def get_note(slug: str, q: str = "") -> dict[str, str]:
        seen.append((slug, q))
        return {"slug": slug, "q": q}

    @app.post("/uploads")
    async def upload(note: Note) -> dict[str, int]:
        return {"length": len(note.title)}

    @app.post("/messages")
    async def send_message(note: Note) -> dict[str, str]:
        if note.tags:
            raise InvalidInput("The message cannot be sent now.")  # a domain's refusal naming no field
        return {"text": check_message(note.title, "text")}

    @app.get("/boom")
    async def boom() -> None:
        password = "hunter2-in-a-local"  # what a traceback with locals would print
        raise RuntimeError("unexpected " + password[:0])

    return app


@pytest.fixture
def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app()), base_url="http://test")


async def test_nul_in_a_query_parameter_is_refused_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/notes/a", params={"q": "x\x00y"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "q"


async def test_nul_in_a_path_parameter_is_refused_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/notes/%00")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "slug", "message": "The text must not contain the NUL character."}]


@pytest.mark.parametrize(
    ("url", "field"),
    [("/notes/a?q=%ED%A0%80", "q"), ("/notes/a?q=%FF", "q"), ("/notes/%ED%A0%80", "slug"), ("/notes/%C0%80", "slug")],
    ids=["surrogate-in-query", "bad-byte-in-query", "surrogate-in-path", "overlong-nul-in-path"],
)
async def test_percent_escapes_that_are_not_utf8_are_refused_naming_the_field(
    client: httpx.AsyncClient, url: str, field: str
) -> None:
    """FAILS today: a lone surrogate can reach a URL only as its (invalid) UTF-8 bytes, %ED%A0%80, and those, like
    any bytes that are not UTF-8 (%FF, the overlong NUL %C0%80), are decoded with errors="replace" (by the server
    for the path, by parse_qsl for the query), so the text policy sees U+FFFD and the service gets it: a search
    for "\ufffd\ufffd\ufffd" (200), "No group \ufffd..." (404). api.md promises a 422 naming the field, as for a
    body that is not UTF-8. Found by the s13 probe (GET /api/groups?q=%ED%A0%80 -> 200)."""
    response = await client.get(url)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"title": "a\\ud800b"}', "title"),
        (b'{"title": "ok", "tags": ["fine", "\\udfff"]}', "tags.1"),
        (b'{"title": "a\\u0000"}', "title"),
        (b'{"title": "ok", "extra": {"k": {"deep": "\\u0000"}}}', "extra.k.deep"),
        (b'{"title": "ok", "extra": {"\\u0000": 1}}', "extra"),
    ],
)
async def test_nul_and_lone_surrogates_in_a_json_body_are_refused_naming_the_field(
    client: httpx.AsyncClient, body: bytes, field: str
) -> None:
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert response.headers["x-request-id"]


async def test_text_reaches_the_service_in_nfc() -> None:
    app = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        decomposed = "Cafe\u0301"
        created = await client.post("/notes", json={"title": decomposed, "tags": [decomposed]})
        fetched = await client.get("/notes/x", params={"q": decomposed})
    assert created.json()["title"] == "Caf\u00e9" and created.json()["tags"] == ["Caf\u00e9"]
    assert fetched.json()["q"] == "Caf\u00e9"


async def test_joiners_pass_the_text_policy_untouched(client: httpx.AsyncClient) -> None:
    family = "\U0001f469\u200d\U0001f467 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert (await client.post("/notes", json={"title": family})).json()["title"] == family


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
async def test_json_nested_too_deep_is_refused(client: httpx.AsyncClient, depth: int) -> None:
    body = '{"title": "x", "extra": {"a": ' + "[" * depth + "]" * depth + "}}"
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "nested deeper" in response.json()["detail"]


async def test_json_nested_up_to_the_limit_passes(client: httpx.AsyncClient) -> None:
    lists = MAX_JSON_DEPTH - 2  # with the two objects around them: as many brackets as the limit
    body = '{"title": "x", "extra": {"a": ' + "[" * lists + "]" * lists + "}}"
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "plain ascii", "tags": ["a", "b"]}',
        b'{"title": "' + b"[" * 40 + b'"}',  # brackets inside a string: parsed to be sure, still fine
    ],
)
async def test_bodies_the_bytes_already_clear_are_not_parsed_again(
    client: httpx.AsyncClient, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text policy reads the bytes first: only a body with a \\u escape, non-ASCII bytes, a NUL byte or more
    brackets than the depth limit is parsed (FastAPI parses every body anyway; a second full parse cost more
    than a small endpoint)."""
    parsed: list[str | bytes] = []

    class CountingJson:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(raw: str | bytes) -> Any:
            parsed.append(raw)
            return json.loads(raw)

    monkeypatch.setattr(text_module, "json", CountingJson)
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert parsed == ([] if body.count(b"[") <= MAX_JSON_DEPTH else [body.decode()])
    escaped = b'{"title": "caf\\u00e9"}'
    assert (await client.post("/notes", content=escaped, headers={"content-type": "application/json"})).json() == {
        "title": "caf\u00e9",
        "tags": [],
        "extra": {},
    }
    assert parsed[-1] == escaped.decode()


async def test_a_raw_nul_byte_in_a_body_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/notes", content=b'{"title": "a\x00b"}', headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_names_refuse_bidi_controls_and_invisible_only_values_but_keep_joiners() -> None:
    assert name_problem("Ann\u202eSmith") and name_problem("\u2067x")
    assert name_problem("\u200b\u200d") and name_problem("\u3164") and name_problem("\u2800\u180e")
    assert name_problem("Ann\u200dB") is None and name_problem("\u0645\u06cc\u200c") is None
    assert name_problem("  ") is None  # blank: the owner decides (required or clearing)
    assert check_name("Ann", "name") == "Ann"


# --- limits ---------------------------------------------------------------------------------------------------


async def call_raw(app: FastAPI, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """(status, how many body chunks the app stack pulled): proves a refusal does not read what it refuses."""
    pulled = 0
    chunks = list(body_chunks)

    async def receive() -> Message:
        nonlocal pulled
        if not chunks:
            await asyncio.sleep(3600)
        pulled += 1
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    status = 0

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/notes",
        "raw_path": b"/notes",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    return status, pulled


async def test_a_body_declared_over_the_limit_is_refused_before_reading() -> None:
    huge = str(200 * 1024 * 1024).encode()
    status, pulled = await call_raw(make_app(), [b"x" * 1024] * 10, [(b"content-length", huge)])
    assert (status, pulled) == (413, 0)


async def test_a_body_streamed_over_the_limit_is_refused_while_reading() -> None:
    chunk = b"x" * (256 * 1024)
    status, pulled = await call_raw(make_app(), [chunk] * 800, [])  # 200 MiB on offer, no Content-Length
    assert status == 413
    assert pulled == DEFAULT_BODY_LIMIT // len(chunk) + 1  # stopped at the first chunk over 1 MiB


async def test_a_route_with_a_larger_limit_takes_a_larger_body(client: httpx.AsyncClient) -> None:
    title = "x" * (2 * DEFAULT_BODY_LIMIT)
    assert (await client.post("/notes", json={"title": title})).status_code == 413
    assert (await client.post("/uploads", json={"title": title})).json() == {"length": len(title)}


async def test_too_many_headers_and_a_long_query_are_refused(client: httpx.AsyncClient) -> None:
    headers = {f"x-filler-{i}": "y" for i in range(150)}
    assert (await client.get("/notes/a", headers=headers)).status_code == 431
    assert (await client.get("/notes/a", headers={"x-big": "y" * 10_000})).status_code == 431
    response = await client.get("/notes/a", params={"q": "y" * (MAX_QUERY_BYTES + 1)})
    assert response.status_code == 414 and response.headers["content-type"] == "application/problem+json"


async def test_a_long_path_is_refused_and_not_echoed(client: httpx.AsyncClient) -> None:
    """An outsider's probe: a 20 KB id came back whole in a 404's detail. The path is bounded like the query."""
    at_the_limit = "/notes/" + "a" * (MAX_PATH_BYTES - len("/notes/"))
    assert (await client.get(at_the_limit)).status_code == 200
    response = await client.get(at_the_limit + "a")
    assert response.status_code == 414 and response.headers["content-type"] == "application/problem+json"
    assert "aaaa" not in response.text
    # Measured as sent: percent-escapes count, the query does not.
    assert (await client.get("/notes/" + "%41" * (MAX_PATH_BYTES // 3))).status_code == 414
    assert (await client.get(at_the_limit, params={"q": "y" * 100})).status_code == 200


async def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(client: httpx.AsyncClient) -> None:
    """An outsider's probe: Starlette answered /notes/a/ with a 307 to http://<Host header>/notes/a, so a hostile
    Host header chose the redirect's target."""
    response = await client.get("/notes/a/?q=1", headers={"Host": "evil.example"})
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers and "evil" not in response.text


# --- unexpected errors ----------------------------------------------------------------------------------------


async def test_an_unexpected_error_is_a_problem_with_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"x-request-id": "req-123"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == "req-123" == response.headers["x-request-id"]
    assert "hunter2" not in response.text and "RuntimeError" not in response.text


async def test_a_500_leaves_the_keep_alive_connection_open() -> None:
    """Over a real socket: after the 500, the same connection answers the next request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn's Server offers no event to wait on
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for path in ("/boom", "/notes/after"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            answers.append((head.split(b" ")[1], json.loads(await reader.readexactly(length))))
        writer.close()
    finally:
        server.should_exit = True
        await serving
    assert answers[0][0] == b"500" and answers[0][1]["status"] == 500
    assert answers[1] == (b"200", {"slug": "after", "q": ""})


async def test_a_body_that_is_not_utf8_is_a_422_not_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/notes", content=b'{"title": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"], ids=lambda encoding: encoding
)
async def test_json_in_utf16_or_utf32_is_refused_as_not_utf8(client: httpx.AsyncClient, encoding: str) -> None:
    # json.loads (the service's parser) reads bytes in any of these, guessing from the first bytes (an outsider's
    # probe: a UTF-16 `{}` reset a person's preferences); the contract's JSON is UTF-8.
    body = '{"title": "x"}'.encode(encoding)
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{"field": "body", "message": "Not UTF-8."}]
    assert client._transport.app.state.seen == []  # type: ignore[attr-defined]


async def test_json_in_utf8_after_a_byte_order_mark_is_read_and_checked(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    accepted = await client.post("/notes", content=b'\xef\xbb\xbf{"title": "x"}', headers=headers)
    assert accepted.status_code < 300, accepted.text
    refused = await client.post("/notes", content=b'\xef\xbb\xbf{"title": "a\\u0000b"}', headers=headers)
    assert refused.status_code == 422, refused.text


@pytest.mark.parametrize(
    "content_type", [b"application/json\xa0", b"Application/JSON ; charset=utf-8", b"application/problem+json"]
)
async def test_every_body_fastapi_parses_as_json_passes_the_text_policy(
    client: httpx.AsyncClient, content_type: bytes
) -> None:
    # FastAPI decides "JSON" with the email module's media-type parser, which forgives more than a plain compare.
    body = b'{"title": "a\\u0000b"}'
    response = await client.post("/notes", content=body, headers={"content-type": content_type})  # type: ignore[dict-item]
    assert response.status_code == 422, response.text
    assert client._transport.app.state.seen == []  # type: ignore[attr-defined]


async def test_json_with_too_many_values_is_refused_before_it_is_walked(client: httpx.AsyncClient) -> None:
    # 15,000 arrays nested 30 deep (under 1 MiB) took the walk 10 s on the event loop before it was bounded.
    body = '{"title": "x", "tags": [' + ",".join(["[" * 30 + "]" * 30] * 15_000) + "]}"
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "values" in response.json()["detail"]


async def test_a_number_too_long_to_read_is_a_422_naming_the_body(client: httpx.AsyncClient) -> None:
    body = '{"title": "x", "extra": {"n": ' + "9" * 5000 + "}}"
    response = await client.post("/notes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["body"]


JSON = {"content-type": "application/json"}
REFUSALS_422 = {
    "validation": ("POST", "/notes", b'{"tags": []}'),
    "NUL in the body": ("POST", "/notes", b'{"title": "a\\u0000b"}'),
    "lone surrogate in the body": ("POST", "/notes", b'{"title": "\\ud800"}'),
    "nested too deep": ("POST", "/notes", b'{"title": "x", "extra": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}"),
    "too many values": ("POST", "/notes", b'{"title": "x", "tags": [' + b",".join([b'"\\u00e9"'] * 10_001) + b"]}"),
    "not UTF-8": ("POST", "/notes", b'{"title": "\xff\xfe"}'),
    "a number too long": ("POST", "/notes", b'{"title": "x", "extra": {"n": ' + b"9" * 5000 + b"}}"),
    "NUL in the path": ("GET", "/notes/%00", b""),
    "NUL in the query": ("GET", "/notes/a?q=%00", b""),
    "control character in a message": ("POST", "/messages", b'{"title": "ding\\u0007"}'),
    "a domain refusal naming no field": ("POST", "/messages", b'{"title": "x", "tags": ["now"]}'),
}


@pytest.mark.parametrize("refusal", REFUSALS_422)
async def test_every_422_has_one_shape_whoever_refuses(client: httpx.AsyncClient, refusal: str) -> None:
    """The text policy and the limits answer before FastAPI, the validation and domain handlers after it: a client
    reads each 422 the same way (the contract's `errors: [{field, message}]`, never empty), written the same way."""
    method, url, body = REFUSALS_422[refusal]
    response = await client.request(method, url, content=body, headers=JSON if body else {})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail", "errors"}, problem
    assert (problem["type"], problem["title"], problem["status"]) == ("about:blank", "Invalid input", 422)
    assert problem["errors"] and all(set(error) == {"field", "message"} for error in problem["errors"]), problem
    assert response.content == json.dumps(problem, ensure_ascii=False, separators=(",", ":")).encode()
