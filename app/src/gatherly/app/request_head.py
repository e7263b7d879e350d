"""uvicorn's HTTP protocol with the request head bounded: httptools holds a request line or headers of any size in
memory until they end (a 100 MiB request line grew the process by as much), before any ASGI app can refuse them."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gatherly.kernel.limits import MAX_PATH_BYTES, MAX_QUERY_BYTES, PROBLEM_JSON, problem_body

log = structlog.get_logger(__name__)

# Above the largest head the boundary's RequestLimits lets through (32 KiB of headers, a 4 KiB path, a 4 KiB query and
# the request line's few other bytes), so that every head under it still gets the boundary's own answer.
MAX_REQUEST_HEAD = 48 * 1024
# A URL longer than the boundary's path and query limits together: refused as too long whatever else is wrong.
MAX_URL = MAX_PATH_BYTES + MAX_QUERY_BYTES


class BoundedHeadProtocol(HttpToolsProtocol):
    """Refuses a request whose head (request line and headers) grows past MAX_REQUEST_HEAD before it ends, with a
    problem+json (414 when the URL alone is longer than MAX_URL, else 431), and closes the connection: the
    rest is never read. Only what arrives while one head is unfinished counts, never a body: a read that begins or
    ends a head is not counted (it is at most one read of the socket), the reads in between are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_events = 0  # heads begun or ended: a read that saw one is not wholly inside a head

    def data_received(self, data: bytes) -> None:
        events = self._head_events
        super().data_received(data)
        if not self._in_head or self._head_events != events or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_REQUEST_HEAD:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._head_events += 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_events += 1
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser refuses, a problem like every other answer: a URL longer than httptools
        parses (its offsets are 16 bits: 65,535 bytes) arriving in one read is a 414, anything else a 400."""
        if self.transport.is_closing():  # refused already
            return
        if self._url_too_long():
            self._answer(414, f"The URL is longer than {MAX_URL} bytes.")
        else:
            self._answer(400, "The request is not valid HTTP/1.1.")

    def _refuse(self) -> None:
        log.warning("request head refused", received=self._head_bytes, client=self.client)
        if self._url_too_long():
            status, detail = 414, f"The URL is longer than {MAX_URL} bytes."
        else:
            status, detail = 431, f"The request line and headers are larger than {MAX_REQUEST_HEAD} bytes."
        self._answer(status, detail)

    def _url_too_long(self) -> bool:
        return len(getattr(self, "url", b"")) > MAX_URL  # uvicorn sets it when a request begins

    def _answer(self, status: int, detail: str) -> None:
        body = json.dumps(problem_body(status, detail)).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {PROBLEM_JSON}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
