"""Size limits at the boundary (pure ASGI): bodies refused while reading (413), oversized headers (431), paths and
queries (414) refused before a service sees them, so one client cannot make a process read or hold hundreds of
megabytes, nor have a service echo a 60 KB id back in an error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatherly.kernel.messages import correlation_id_var

PROBLEM_JSON = "application/problem+json"
MiB = 1024 * 1024
# api.md: 1 MiB of JSON by default; routes that take files say more (see Settings.body_limits).
DEFAULT_BODY_LIMIT = 1 * MiB
MAX_HEADERS = 100
MAX_HEADER_BYTES = 8 * 1024  # one header line; a bearer token is under 1 KiB
MAX_HEADERS_TOTAL = 32 * 1024
MAX_QUERY_BYTES = 4 * 1024
# The longest path of this API (two ids and a slug, percent-encoded) is a few hundred bytes; the server itself lets
# through URLs up to 64 KiB.
MAX_PATH_BYTES = 4 * 1024

log = structlog.get_logger(__name__)


def problem_body(status: int, detail: str, *, title: str | None = None, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem. A 5xx carries the request id (also in X-Request-ID), so a report of an error on our side
    can be matched to its logged traceback; other problems leave it to the header, so that equal refusals have
    equal bodies (a login's answer must not differ between an unknown email and a wrong password)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    request_id = correlation_id_var.get()
    if status >= 500 and request_id and "request_id" not in body:
        body["request_id"] = request_id
    return body


def problem_bytes(status: int, detail: str, *, title: str | None = None, **extra: Any) -> bytes:
    """A problem written as the FastAPI handlers write theirs (JSONResponse's compact UTF-8), so every problem reads
    the same whoever refuses: a middleware, or the HTTP protocol itself (app/request_head.py)."""
    body = problem_body(status, detail, title=title, **extra)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> None:
    """Answer with a problem+json from ASGI middleware (before any FastAPI handler exists for the request)."""
    payload = problem_bytes(status, detail, title=title, **extra)
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive, limit: int | None = None) -> tuple[bytes, Message | None]:
    """The whole request body, or (what was read, the message that stopped reading): a disconnect, or a
    synthetic `limit.exceeded` once more than `limit` bytes arrived (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return b"", {"type": "limit.exceeded"}
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replay(body: bytes, receive: Receive | None = None) -> Receive:
    """A `receive` that hands the app the already-read body, then waits on the real one (for the disconnect)."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is None:
            return {"type": "http.disconnect"}
        return await receive()

    return receive_again


class RequestLimits:
    """Refuses oversized requests: too many or too long headers (431), a long path or query (414), a body over the
    route's limit (413: by Content-Length before reading, else while reading, never buffering more than the limit)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: int = DEFAULT_BODY_LIMIT,
        body_limits: Mapping[str, int] | None = None,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers_total: int = MAX_HEADERS_TOTAL,
        max_query_bytes: int = MAX_QUERY_BYTES,
        max_path_bytes: int = MAX_PATH_BYTES,
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        # Longest prefix first, so /api/images/x beats /api; each with the form a path under it starts with.
        self.body_limits = [
            (prefix, prefix.rstrip("/") + "/", limit)
            for prefix, limit in sorted((body_limits or {}).items(), key=lambda item: len(item[0]), reverse=True)
        ]
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_headers_total = max_headers_total
        self.max_query_bytes = max_query_bytes
        self.max_path_bytes = max_path_bytes

    def limit_for(self, path: str) -> int:
        for prefix, under, limit in self.body_limits:
            if path == prefix or path.startswith(under):
                return limit
        return self.body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        # One pass over the headers (every request pays it): the longest line, the total, the declared length.
        longest = total = 0
        declared_length: bytes | None = None
        for name, value in headers:
            size = len(name) + len(value)
            total += size
            if size > longest:
                longest = size
            if name == b"content-length" and declared_length is None:
                declared_length = value
        if len(headers) > self.max_headers or longest > self.max_header_bytes or total > self.max_headers_total:
            await send_problem(send, 431, "The request headers are too large.")
            return
        if len(scope.get("query_string", b"")) > self.max_query_bytes:
            await send_problem(send, 414, f"The query string is longer than {self.max_query_bytes} bytes.")
            return
        if path_bytes(scope) > self.max_path_bytes:
            await send_problem(send, 414, f"The path is longer than {self.max_path_bytes} bytes.")
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(declared_length)
        if declared is not None and declared > limit:
            await self._too_large(send, limit)
            return
        body, stopped = await read_body(receive, limit)
        if stopped is not None:
            if stopped["type"] == "limit.exceeded":
                await self._too_large(send, limit)
            return  # otherwise the client disconnected: nobody to answer
        await self.app(scope, replay(body, receive), send)

    async def _too_large(self, send: Send, limit: int) -> None:
        # The rest of the body stays unread, so the connection cannot carry another request.
        await send_problem(
            send, 413, f"The request body is larger than {limit} bytes.", headers={"Connection": "close"}
        )


def path_bytes(scope: Scope) -> int:
    """The length of the path as the client sent it (percent-escapes included), without a query."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return len(scope["path"].encode("utf-8", "surrogateescape"))
    query = raw.find(b"?")  # some servers' raw_path holds the query too (see kernel/text.py)
    return len(raw) if query < 0 else query


def _content_length(value: bytes | None) -> int | None:
    """The first Content-Length header's value as a number, None when there is none or it is not one."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
