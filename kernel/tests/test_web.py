"""HTTP conventions: problem+json for every error, field-level validation errors, cursors, health."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.types import Message, Receive, Scope, Send

from gatherly.kernel.clock import time_problem
from gatherly.kernel.errors import Conflict, InvalidInput, TooManyRequests, Unavailable
from gatherly.kernel.messages import correlation_id_var
from gatherly.kernel.web import (
    FilteredCursors,
    PageRequest,
    Readiness,
    RequestContextMiddleware,
    cursor_int,
    cursor_time,
    decode_cursor,
    encode_cursor,
    filters_fingerprint,
    install_error_handlers,
    install_health,
    page_request,
    position_for,
    with_filters,
)


class Signup(BaseModel):
    email: str = Field(min_length=3)
    age: int


def make_app(readiness: Readiness) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_health(app, readiness)

    @app.post("/things")
    async def create(body: Signup) -> dict[str, str]:
        return {"email": body.email}

    @app.post("/several-faults")
    async def several_faults() -> None:
        raise InvalidInput("The request is not valid.", errors=[("email.a", "Unknown."), ("push.b", "Unknown too.")])

    @app.post("/one-fault")
    async def one_fault() -> None:
        raise InvalidInput("Unknown.", field="email.a")

    @app.post("/taken")
    async def taken() -> None:
        raise Conflict("That name is taken.")

    @app.post("/slow-down")
    async def slow_down() -> None:
        raise TooManyRequests("Too many tries.", retry_after=8)

    @app.get("/keys-down")
    async def keys_down() -> None:
        raise Unavailable("The key server is down.", retry_after=3)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/database-gone")
    async def database_gone() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionResetError("connection was closed in the middle"))

    # The drivers' own errors, as a FixedRead (kernel/fixed_reads.py) raises them.
    @app.get("/sqlite-unreadable")
    async def sqlite_unreadable() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    @app.get("/asyncpg-connection-lost")
    async def asyncpg_connection_lost() -> None:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    @app.get("/sqlite-wrong-statement")
    async def sqlite_wrong_statement() -> None:
        raise sqlite3.ProgrammingError("secret internals")

    @app.get("/database-slow-to-connect")
    async def database_slow_to_connect() -> None:
        raise TimeoutError()

    @app.get("/page")
    async def page(request: PageRequest = Depends(page_request)) -> dict[str, object]:
        return {"limit": request.limit, "cursor": request.cursor}

    return app


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def client(readiness: Readiness) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(readiness), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_invalid_input_is_a_422_problem_listing_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json={"email": "x", "age": "old"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422 and body["title"] and body["detail"]
    assert {e["field"] for e in body["errors"]} == {"email", "age"}


async def test_invalid_input_names_each_field_it_is_given_or_its_one_field(client: httpx.AsyncClient) -> None:
    several = await client.post("/several-faults")
    assert several.status_code == 422
    assert several.headers["content-type"] == "application/problem+json"
    assert several.json() == {
        "type": "about:blank",
        "title": "Invalid input",
        "status": 422,
        "detail": "The request is not valid.",
        "errors": [{"field": "email.a", "message": "Unknown."}, {"field": "push.b", "message": "Unknown too."}],
    }
    one = (await client.post("/one-fault")).json()
    assert (one["detail"], one["errors"]) == ("Unknown.", [{"field": "email.a", "message": "Unknown."}])


async def test_a_body_that_is_not_json_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    # The field is the body, not the character where the JSON went wrong (FastAPI's location is ("body", 1)).
    assert response.json()["errors"] == [{"field": "body", "message": "The body is not valid JSON (at character 1)."}]


async def test_a_domain_error_becomes_its_status(client: httpx.AsyncClient) -> None:
    response = await client.post("/taken")
    assert response.status_code == 409
    assert response.json()["detail"] == "That name is taken."


async def test_too_many_requests_says_when_to_come_back(client: httpx.AsyncClient) -> None:
    response = await client.post("/slow-down")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "8"


async def test_an_unavailable_dependency_is_a_503_that_says_when_to_come_back(client: httpx.AsyncClient) -> None:
    response = await client.get("/keys-down")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "3"


async def test_an_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_unexpected_error_is_a_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/database-gone", "/database-slow-to-connect", "/sqlite-unreadable", "/asyncpg-connection-lost"]
)
async def test_a_database_that_cannot_be_reached_is_a_503_to_try_again(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert "connection was closed" not in response.text


async def test_a_wrong_statement_on_the_driver_is_a_500_not_a_503(client: httpx.AsyncClient) -> None:
    response = await client.get("/sqlite-wrong-statement")
    assert response.status_code == 500
    assert "secret internals" not in response.text


async def test_readiness_follows_start_and_drain(client: httpx.AsyncClient, readiness: Readiness) -> None:
    assert (await client.get("/readyz")).status_code == 503
    readiness.set_ready()
    assert (await client.get("/readyz")).status_code == 200
    readiness.set_draining()
    response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["detail"] == "draining"
    assert (await client.get("/livez")).status_code == 200


async def test_metrics_are_exposed_for_prometheus(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "gatherly_messages_handled_total" in response.text


async def test_limits_are_bounded(client: httpx.AsyncClient) -> None:
    assert (await client.get("/page")).json()["limit"] == 20
    assert (await client.get("/page?limit=100")).json()["limit"] == 100
    assert (await client.get("/page?limit=101")).status_code == 422
    assert (await client.get("/page?limit=0")).status_code == 422


async def test_a_cursor_round_trips_and_a_forged_one_is_a_422(client: httpx.AsyncClient) -> None:
    cursor = encode_cursor({"starts_at": "2026-12-01T18:00:00+00:00", "id": "e1"})
    assert decode_cursor(cursor) == {"starts_at": "2026-12-01T18:00:00+00:00", "id": "e1"}
    assert (await client.get(f"/page?cursor={cursor}")).json()["cursor"]["id"] == "e1"
    response = await client.get("/page?cursor=%%%garbage")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


_POSITION_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.datetimes(timezones=st.timezones()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(position=st.dictionaries(st.text(), _POSITION_VALUES, max_size=4))
def test_a_cursor_is_the_base64_of_the_positions_compact_json(position: dict[str, object]) -> None:
    """encode_cursor keeps one JSON encoder rather than making one per call: the text is json.dumps's (non-ASCII
    escaped, NaN written, anything else by str), so cursors issued before stay the same."""
    expected = json.dumps(position, separators=(",", ":"), default=str).encode()
    assert encode_cursor(position) == base64.urlsafe_b64encode(expected).decode().rstrip("=")


def test_a_search_cursor_gives_its_position_back_only_to_the_filters_it_was_made_with() -> None:
    filters = ("python", None, (52.52, 13.405, 50.0), True, False, "newest")
    fingerprint = filters_fingerprint(filters)
    assert fingerprint == filters_fingerprint(list(filters)) and len(fingerprint) == 8
    position = {"s": "newest", "k": "2026-12-01T18:00:00+00:00", "i": "g1"}
    cursor = decode_cursor(encode_cursor(with_filters(position, fingerprint)))
    assert position_for(cursor, fingerprint) == position
    assert position_for(None, fingerprint) is None
    others = [("python ", *filters[1:]), (*filters[:3], False, False, "newest"), (*filters[:5], "name"), ()]
    for other in others:
        with pytest.raises(InvalidInput) as refused:
            position_for(cursor, filters_fingerprint(other))
        assert (refused.value.field, refused.value.detail) == ("cursor", "The cursor is not one this API issued.")
    assert position_for(position, fingerprint) == position  # issued before cursors carried their filters
    for forged in ({**position, "f": None}, {**position, "f": 7}):
        with pytest.raises(InvalidInput):
            position_for(forged, fingerprint)


class CountedFilters:
    """A search's criteria whose `filters` property (built on each read, as theirs are) counts its reads."""

    def __init__(self, *filters: Any) -> None:
        self._filters = filters
        self.reads = 0

    @property
    def filters(self) -> tuple[Any, ...]:
        self.reads += 1
        return self._filters


def test_filtered_cursors_tie_the_next_position_and_take_back_only_their_own() -> None:
    position = {"before": 7}
    unread = FilteredCursors(lambda: [True])
    assert unread.after(None) is None and unread.next(None) is None
    cursor = decode_cursor(encode_cursor(unread.next(position) or {}))
    assert cursor == with_filters(position, filters_fingerprint([True]))
    assert FilteredCursors(lambda: [True]).after(cursor) == position
    assert FilteredCursors(lambda: [True]).after(position) == position  # issued before cursors carried their filters
    with pytest.raises(InvalidInput) as refused:
        FilteredCursors(lambda: [False]).after(cursor)
    assert (refused.value.status, refused.value.field) == (422, "cursor")


def test_filtered_cursors_read_the_filters_only_when_a_cursor_comes_or_goes() -> None:
    position = {"before": 7}
    criteria = CountedFilters("music", None)

    def one_request(cursor: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
        cursors = FilteredCursors(lambda: criteria.filters)
        cursors.after(cursor)
        return cursors.next(after)

    assert one_request(None, None) is None  # a first page that is also the last
    assert criteria.reads == 0
    first = one_request(None, position)  # a first page with a next one
    assert criteria.reads == 1
    assert one_request(first, position) == first  # a middle page: a cursor comes and goes, read once
    assert criteria.reads == 2
    assert one_request(first, None) is None  # the last page
    assert criteria.reads == 3
    assert one_request(position, None) is None  # a cursor from before they carried a fingerprint: taken
    assert criteria.reads == 4
    other = CountedFilters("art", None)
    with pytest.raises(InvalidInput) as refused:
        FilteredCursors(lambda: other.filters).after(first)
    assert (refused.value.status, refused.value.field) == (422, "cursor")
    assert other.reads == 1


@pytest.mark.parametrize(
    "forged",
    [
        '{"k":"\\u0000","i":"x"}',  # NUL: PostgreSQL refuses it
        '{"k":"a","i":"\\ud800"}',  # a lone surrogate: SQLite's encoder refuses it
        '{"k":100000000000000000000000000000000000000,"i":"x"}',  # past 64 bits
        '{"d":NaN,"i":"x"}',
        '{"d":-Infinity,"i":"x"}',
        '{"k":["\\u0000"],"i":"x"}',
        '{"\\u0000":1}',
    ],
)
async def test_a_forged_cursor_with_values_no_database_takes_is_a_422(client: httpx.AsyncClient, forged: str) -> None:
    """The text policy cannot see inside a cursor's base64: what the cursor carries is checked when decoded."""
    cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    response = await client.get(f"/page?cursor={cursor}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"
    assert decode_cursor(encode_cursor({"k": 2**63 - 1, "d": 1.5, "i": "zoë"}))["k"] == 2**63 - 1


@pytest.mark.parametrize(
    "value",
    ["2030-01-01T00:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "yesterday", 20300101],
    ids=["naive", "before-year-1-in-utc", "after-year-9999-in-utc", "not-a-time", "not-text"],
)
def test_a_cursor_time_without_offset_or_out_of_range_in_utc_is_refused(value: object) -> None:
    """The services turn these errors into their 422 naming the cursor; bound as they were, they were 500s."""
    with pytest.raises((TypeError, ValueError)):
        cursor_time(value)


def test_a_cursor_time_as_the_api_writes_it_is_read() -> None:
    assert cursor_time("9999-12-31T23:59:59+00:00") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert cursor_time("0001-01-01T00:00:00-14:00").utcoffset() == timedelta(hours=-14)


@pytest.mark.parametrize("value", [1e300, 1.0, "9" * 30, "1", True, None])
def test_a_cursor_number_that_is_not_a_json_integer_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        cursor_int(value)


def test_a_cursor_number_as_the_api_writes_it_is_read() -> None:
    assert cursor_int(2**63 - 1) == 2**63 - 1
    assert cursor_int(0) == 0


def test_time_problem_names_a_missing_offset_and_years_outside_1_to_9999() -> None:
    assert time_problem(datetime(2030, 1, 1)) == "has no offset"
    assert time_problem(datetime(9999, 12, 31, 23, tzinfo=UTC)) is None
    assert time_problem(datetime(9999, 12, 31, 23, tzinfo=UTC), ZoneInfo("Europe/Berlin")) == (
        "falls outside the years 1 to 9999 in Europe/Berlin"
    )
    assert time_problem(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))) == "falls outside the years 1 to 9999"


def traced_app() -> tuple[FastAPI, dict[str, object]]:
    """An app behind RequestContextMiddleware whose endpoint notes the task it runs in and the correlation id."""
    seen: dict[str, object] = {}
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, service="test")

    @app.get("/where")
    async def where() -> dict[str, str]:
        seen["task"] = asyncio.current_task()
        seen["correlation_id"] = correlation_id_var.get()
        return {"ok": "yes"}

    return app, seen


async def test_a_request_id_sent_by_the_caller_comes_back_and_correlates_what_the_request_causes() -> None:
    app, seen = traced_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/where", headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert seen["correlation_id"] == "req-42"


async def test_a_request_without_an_id_gets_a_fresh_one_and_an_unprintable_one_is_replaced() -> None:
    app, seen = traced_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        plain = await client.get("/where")
        hostile = await client.get("/where", headers={"X-Request-ID": "x\tforged=1"})
    assert uuid.UUID(plain.headers["x-request-id"])
    assert uuid.UUID(hostile.headers["x-request-id"])
    assert seen["correlation_id"] == hostile.headers["x-request-id"]


async def test_the_endpoint_runs_in_the_servers_task_without_an_extra_one() -> None:
    # Starlette's BaseHTTPMiddleware runs the endpoint in a task of its own and re-streams its body.
    app, seen = traced_app()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/where",
        "raw_path": b"/where",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert seen["task"] is asyncio.current_task()


async def test_requests_are_counted_by_status_even_when_the_endpoint_raises() -> None:
    app, _ = traced_app()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/database-gone")
    async def database_gone() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionResetError("connection was closed in the middle"))

    @app.get("/database-slow-to-connect")
    async def database_slow_to_connect() -> None:
        raise TimeoutError()

    def count(route: str, status: str) -> float:
        labels = {"service": "test", "method": "GET", "route": route, "status": status}
        return REGISTRY.get_sample_value("gatherly_http_requests_total", labels) or 0.0

    ok, failed = count("/where", "200"), count("/boom", "500")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/where")).status_code == 200
        assert (await client.get("/boom")).status_code == 500
    assert (count("/where", "200"), count("/boom", "500")) == (ok + 1, failed + 1)


async def test_an_error_raised_below_the_request_context_before_an_answer_is_a_counted_500_with_the_id() -> None:
    async def raising(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("secret internals")  # any layer under the request context, not only a route

    def count() -> float:
        labels = {"service": "raw", "method": "GET", "route": "", "status": "500"}
        return REGISTRY.get_sample_value("gatherly_http_requests_total", labels) or 0.0

    before = count()
    app = RequestContextMiddleware(raising, service="raw")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/anything", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["request_id"] == "req-500"
    assert "secret" not in response.text
    assert count() == before + 1


async def test_an_error_after_the_answer_started_is_raised_so_the_server_closes_the_connection() -> None:
    async def half_an_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("broke mid-answer")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/half", "headers": [], "query_string": b""}
    with pytest.raises(RuntimeError, match="broke mid-answer"):
        await RequestContextMiddleware(half_an_answer, service="raw")(scope, receive, send)
    assert [message["type"] for message in sent] == ["http.response.start"]


async def test_requests_are_counted_and_timed_per_route_template_and_unmatched_paths_under_none() -> None:
    app, _ = traced_app()

    @app.post("/things/{thing_id}")
    async def thing(thing_id: str, body: dict[str, str]) -> dict[str, str]:
        return {"id": thing_id}

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"service": "test", **labels}) or 0.0

    counted = {"method": "POST", "route": "/things/{thing_id}", "status": "200"}
    timed = {"method": "POST", "route": "/things/{thing_id}"}
    before = sample("gatherly_http_requests_total", **counted), sample("gatherly_http_request_seconds_count", **timed)
    unmatched = sample("gatherly_http_requests_total", method="GET", route="", status="404")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for thing_id in ("a", "b", "c"):  # three ids, one route: the label's values stay bounded
            assert (await client.post(f"/things/{thing_id}", json={"x": "y"})).status_code == 200
        assert (await client.get("/no/such/path")).status_code == 404
    after = sample("gatherly_http_requests_total", **counted), sample("gatherly_http_request_seconds_count", **timed)
    assert after == (before[0] + 3, before[1] + 3)
    assert sample("gatherly_http_requests_total", method="GET", route="", status="404") == unmatched + 1
