"""HTTP conventions shared by every service: problem+json errors, request ids, health, metrics, pagination."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Generic, NamedTuple, TypedDict, TypeVar

import asyncpg
import structlog
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictFloat
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatherly.kernel import tracing
from gatherly.kernel.clock import time_problem
from gatherly.kernel.errors import DomainError, InvalidInput, TooManyRequests, Unavailable
from gatherly.kernel.geo import decimal_number
from gatherly.kernel.limits import PROBLEM_JSON, problem_body, send_problem
from gatherly.kernel.messages import correlation_id_var
from gatherly.kernel.metrics import HTTP_LATENCY, HTTP_REQUESTS
from gatherly.kernel.routes import FastRoute
from gatherly.kernel.text import text_problem

log = structlog.get_logger(__name__)

T = TypeVar("T")


def problem(
    status: int,
    detail: str = "",
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(
        status, detail or HTTPStatus(status).description or HTTPStatus(status).phrase, title=title, **extra
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_of(location: Sequence[Any]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in location)


def _validation_error(error: Mapping[str, Any]) -> dict[str, str]:
    location = error.get("loc", ())
    if error.get("type") == "json_invalid":  # located ("body", <character where the JSON went wrong>): not a field
        where = f" (at character {location[-1]})" if len(location) > 1 else ""
        return {"field": "body", "message": f"The body is not valid JSON{where}."}
    return {"field": _field_of(location), "message": error.get("msg", "invalid")}


# What FastAPI says when reading a JSON body raised something other than a JSON syntax error.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as problem+json; validation errors list their fields; nothing leaks a stack trace."""

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [_validation_error(e) for e in exc.errors()]
        return problem(422, "The request is not valid.", title="Invalid input", errors=errors)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            # JSON that parses but cannot be read (a number past Python's 4,300-digit limit): bad input like any
            # other, so the documented 422 naming the body rather than an undocumented 400.
            errors = [{"field": "body", "message": "The body could not be read (e.g. a number with too many digits)."}]
            return problem(422, "The request is not valid.", title="Invalid input", errors=errors)
        return problem(exc.status_code, str(exc.detail) if exc.detail else "", headers=dict(exc.headers or {}))

    async def on_domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        headers: dict[str, str] = {}
        extra = dict(exc.extra)
        if isinstance(exc, TooManyRequests | Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, InvalidInput):  # every 422 lists what is at fault; without a field, the body
            extra["errors"] = exc.errors
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return problem(exc.status, exc.detail, title=exc.title, headers=headers, **extra)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if database_unreachable(exc):
            log.warning("database unreachable", path=request.url.path, error=repr(exc))
            return problem(503, DATABASE_UNREACHABLE, headers=RETRY_SOON)
        log.error("unhandled error", path=request.url.path, exc_info=exc)
        return problem(500, "Something went wrong on our side; it has been logged.")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(DomainError, on_domain)
    # The last resort only: RequestContextMiddleware (answer_unexpected) answers first. Starlette runs this handler
    # in its outermost middleware, which re-raises after answering, so the server resets the connection.
    app.add_exception_handler(Exception, on_unexpected)


def statuses_from(status_of: Mapping[type[DomainError], int]) -> type[APIRoute]:
    """A route class for a service's router: a domain error raised under its routes gets the status `status_of`
    names for its class (the service's one table of statuses), and the kernel's handler writes the problem.

        router = APIRouter(prefix="/api/groups", route_class=statuses_from(STATUS_OF))
    """

    class DomainErrorsAsProblems(FastRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def handle_with_statuses(request: Request) -> Response:
                try:
                    return await handle(request)
                except DomainError as error:
                    error.status = status_of.get(type(error), error.status)
                    raise

            return handle_with_statuses

    return DomainErrorsAsProblems


async def answer_unexpected(scope: Scope, error: Exception, send: Send) -> None:
    """An exception no handler mapped, raised before any answer: a 500 problem+json carrying the request id, logged
    with its traceback (no local variables: see app/logging.py), or a 503 when the database could not be reached.
    Answered rather than re-raised, so the server keeps the connection open for the next request."""
    if database_unreachable(error):
        # A restart or failover of the database: the pool replaces the dead connections, so the caller may well
        # succeed at once on trying again.
        log.warning("database unreachable", path=scope["path"], method=scope["method"], error=repr(error))
        await send_problem(send, 503, DATABASE_UNREACHABLE, headers=RETRY_SOON)
        return
    log.error("unhandled error", path=scope["path"], method=scope["method"], exc_info=error)
    await send_problem(send, 500, "Something went wrong on our side; it has been logged with this request id.")


DATABASE_UNREACHABLE = "The database cannot be reached right now; try again shortly."
RETRY_SOON = {"Retry-After": "1"}


def database_unreachable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached (its connection lost, refused or timed out), not
    that a statement was wrong: a dependency failure, so a 503 rather than a 500."""
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)
    # The drivers' own errors, raised where statements run on them directly (kernel/fixed_reads.py): the ones
    # SQLAlchemy would have wrapped as OperationalError / InterfaceError.
    driver_unreachable = sqlite3.OperationalError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
    return isinstance(error, DisconnectionError | ConnectionError | TimeoutError | driver_unreachable)


class RequestContextMiddleware:
    """Gives every request an id (X-Request-ID, taken from the caller when sent) that also correlates the
    events it causes, records metrics per route, and (only while tracing is on) the request's server span; an
    exception no handler mapped becomes a 500 problem+json with that id (`answer_unexpected`), whichever layer
    below raised it. Plain ASGI: the endpoint runs in the server's task and its response streams through untouched
    (Starlette's BaseHTTPMiddleware would run it in a task of its own and re-wrap the body, which cost more than
    many endpoints themselves). One layer does both, with one wrapper of `send`, as every API request pays each."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # Labelled metrics, looked up once per (method, route[, status]): each lookup costs tens of microseconds.
        # Routes are the app's path templates ("" when none matched), so the label's values are bounded.
        self._latency: dict[tuple[str, str], Histogram] = {}
        self._requests: dict[tuple[str, str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or str(uuid.uuid4())
        encoded_id = request_id.encode("latin-1")
        status = 0  # none sent yet

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", encoded_id)]
            await send(message)

        token = correlation_id_var.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        span = tracing.server_span(scope, self.service)  # None while tracing is off
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if status:
                log.error("unhandled error", path=scope["path"], method=scope["method"], exc_info=error)
                raise  # half an answer is out: only closing the connection can tell the client
            await answer_unexpected(scope, error, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            correlation_id_var.reset(token)
            structlog.contextvars.unbind_contextvars("request_id")
            route = route_of(scope)
            status = status or 500  # what the server sends when nothing was answered
            if span is not None:
                span.end(route, status)
            self._count(scope["method"], route, status, elapsed)

    def _count(self, method: str, route: str, status: int, elapsed: float) -> None:
        latency = self._latency.get((method, route))
        if latency is None:
            latency = self._latency[(method, route)] = HTTP_LATENCY.labels(self.service, method, route)
        latency.observe(elapsed)
        requests = self._requests.get((method, route, status))
        if requests is None:
            requests = self._requests[(method, route, status)] = HTTP_REQUESTS.labels(
                self.service, method, route, str(status)
            )
        requests.inc()


def route_of(scope: Scope) -> str:
    """The path template the request matched (`/api/groups/{group}`), or "" when no route matched. Routing writes
    it into the scope, which middleware passes on without copying (see kernel/text.py)."""
    route = scope.get("route")
    return getattr(route, "path", "") if route is not None else ""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            # Only a sane id is echoed into our headers and logs; anything else gets a fresh one.
            text = value.decode("latin-1")
            return text if 0 < len(text) <= 200 and text.isprintable() else None
    return None


class Readiness:
    """Ready once started and while every check passes (the database answers, no outbox row is stuck, no background
    task is down); not ready while starting or draining (so load balancers route elsewhere)."""

    def __init__(self, checks: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
        self.ready = False
        self.reason = "starting"
        self.checks = list(checks)

    def set_ready(self) -> None:
        self.ready, self.reason = True, "ready"

    def set_draining(self) -> None:
        self.ready, self.reason = False, "draining"

    async def problem(self) -> str | None:
        """Why this is not ready now, or None when it is."""
        if not self.ready:
            return self.reason
        for check in self.checks:
            try:
                await check()
            except Exception as error:
                return f"dependency unavailable: {error}"
        return None


def install_health(app: FastAPI, readiness: Readiness) -> None:
    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if reason := await readiness.problem():
            return problem(503, reason, title="Not ready")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# --- pagination -------------------------------------------------------------------------------------------

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# An item of a list page as its JSON object, made straight from a row's values (the groups' and events' search
# lists): a plain dict that orjson writes as the page's response model would (each service's test_list_json.py pins
# the bytes), rather than a model built per row and validated again.
Listed = dict[str, Any]


class LocationJson(TypedDict):
    """A point in a list page's JSON (`Listed`): written as LocationBody would be."""

    lat: float
    lng: float


class LocationBody(BaseModel):
    """A point: `{"lat", "lng"}`, in degrees."""

    # One shape for every service (the merged OpenAPI has one schema per name). Strict: numbers only (JSON integers
    # too), so "52.5" or true are refused rather than read as 52.5 or 1.0; a field it does not have is refused too.
    model_config = ConfigDict(extra="forbid")

    lat: StrictFloat
    lng: StrictFloat


def _plain_decimal(value: Any) -> Any:
    """A query's number as a client writes it: pydantic reads "1_0" as 10 (Python's float() syntax)."""
    if isinstance(value, str):
        try:
            return decimal_number(value)
        except ValueError:
            raise PydanticCustomError("float_parsing", "Give a plain decimal number, e.g. 25 or 2.5.") from None
    return value


# A number in a query parameter (e.g. `radius_km`): what a float parameter takes, less Python's own spellings.
QueryNumber = Annotated[float, BeforeValidator(_plain_decimal)]


class PageRequest(NamedTuple):
    """A page asked for: how many items, and the position after which (a decoded cursor). Made by `page_request`
    from parameters FastAPI has validated already: a named tuple, not a model validating them again per request."""

    limit: int = DEFAULT_LIMIT
    cursor: dict[str, Any] | None = None


# What `json.dumps(position, separators=(",", ":"), default=str)` builds on every call (a list makes a cursor per
# page), built once: the same encoder, so the same text.
_CURSOR_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque cursor: the position after the last item of a page (the sort key values)."""
    raw = _CURSOR_JSON.encode(position).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The position a cursor carries. A forged one is a 422 here, before its values reach a query: the text
    policy does not see inside base64, and a database refuses NUL, lone surrogates, NaN and integers past 64 bits."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput("The cursor is not one this API issued.", field="cursor") from error
    if not isinstance(value, dict) or not _storable(value):
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    return value


# The key under which a search's cursor carries the fingerprint of its filters (no list's position uses it).
FILTERS_KEY = "f"


def filters_fingerprint(filters: Sequence[Any]) -> str:
    """A short fingerprint of the filters (and the order) a search was asked with, which its cursors carry
    (`with_filters`, `position_for`): a position is a place in the list it was made in, and sent with other filters
    it would start a page that belongs to neither list. 48 bits of BLAKE2b of the filters' compact JSON: enough to
    tell one client's searches apart; not a secret nor a signature (a cursor is neither)."""
    digest = hashlib.blake2b(_CURSOR_JSON.encode(filters).encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def with_filters(position: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """The position after a page of a search, for its cursor: tied to the search's filters (`filters_fingerprint`)."""
    return {**position, FILTERS_KEY: fingerprint}


def position_for(cursor: dict[str, Any] | None, fingerprint: str) -> dict[str, Any] | None:
    """The position a decoded cursor carries when a search with these filters made it (`with_filters`), without the
    fingerprint; made with other filters, the 422 of a cursor this API did not issue. A cursor without a fingerprint
    was issued before cursors carried one: its position is taken as it was then, so that a listing in progress
    survives a rolling update (its first page from an older replica, the next from a newer)."""
    if cursor is None:
        return None
    if FILTERS_KEY not in cursor:
        return cursor
    if cursor[FILTERS_KEY] != fingerprint:
        raise InvalidInput("The cursor is not one this API issued.", field="cursor")
    position = dict(cursor)
    del position[FILTERS_KEY]
    return position


class FilteredCursors:
    """The cursors of one request to a list with filters: the position a cursor it was sent carries (`position_for`)
    and the next page's position tied to them (`with_filters`). `filters` gives the request's filters: asked for, and
    fingerprinted, once and only when a cursor comes or goes (a first page that is also the last never does), as a
    search's criteria build them on each read."""

    __slots__ = ("_filters", "_fingerprint")

    def __init__(self, filters: Callable[[], Sequence[Any]]) -> None:
        self._filters = filters
        self._fingerprint = ""

    def _fingerprinted(self) -> str:
        if not self._fingerprint:
            self._fingerprint = filters_fingerprint(self._filters())
        return self._fingerprint

    def after(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        """The position to page on from: the 422 of a forged cursor when it was made with other filters."""
        return None if cursor is None else position_for(cursor, self._fingerprinted())

    def next(self, position: dict[str, Any] | None) -> dict[str, Any] | None:
        """The position after this page for its cursor (None on the last page)."""
        return None if position is None else with_filters(position, self._fingerprinted())


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a cursor carries")


_INT64 = range(-(2**63), 2**63)


def _storable(value: Any) -> bool:
    """Whether every value in this decoded JSON can be bound to a query."""
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    if isinstance(value, str):
        return text_problem(value) is None
    if isinstance(value, int) and not isinstance(value, bool):
        return value in _INT64
    return True


def cursor_time(value: Any) -> datetime:
    """A cursor's time, as this API writes them: ISO 8601 with an offset, within the years a timestamp column
    stores. TypeError or ValueError otherwise, for the caller to name the cursor (a naive time cannot be compared
    with the columns, and one past year 9999 in UTC overflows while the query is bound)."""
    moment = datetime.fromisoformat(value)
    if problem := time_problem(moment):
        raise ValueError(f"a cursor's time {problem}")
    return moment


def cursor_int(value: Any) -> int:
    """A cursor's whole number, as this API writes them: a JSON integer (decode_cursor bounds those to 64 bits).
    TypeError otherwise: int() would turn 1e300 or a 30-digit string into an integer no database takes."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("a cursor's number is an integer")
    return value


async def page_request(
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT), cursor: str | None = Query(None)
) -> PageRequest:
    """FastAPI dependency for `?limit=&cursor=`."""
    return PageRequest(limit=limit, cursor=decode_cursor(cursor) if cursor else None)
