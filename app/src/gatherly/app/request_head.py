"""uvicorn's HTTP protocol with the request head bounded: httptools holds a request line or headers of any size in
memory until they end (a 100 MiB request line grew the process by as much), before any ASGI app can refuse them."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gatherly.kernel.limits import MAX_PATH_BYTES, MAX_QUERY_BYTES, PROBLEM_JSON, problem_bytes

log = structlog.get_logger(__name__)

# Above the largest head the boundary's RequestLimits lets through (32 KiB of headers, a 4 KiB path, a 4 KiB query and
# the request line's few other bytes), so that every head under it still gets the boundary's own answer.
MAX_REQUEST_HEAD = 48 * 1024
# A URL longer than the boundary's path and query limits together: refused as too long whatever else is wrong.
MAX_URL = MAX_PATH_BYTES + MAX_QUERY_BYTES
# How long a new connection's first request head, or a head once begun, may take to arrive in full (nginx's
# client_header_timeout): uvicorn waited for ever, so connections trickling a head a byte at a time (slowloris) or
# sending nothing were held open without end. An idle keep-alive connection is uvicorn's KEEP_ALIVE_S, as before.
HEAD_TIMEOUT_S = 60.0
# After a refusal the connection is half-closed and what the client still sends is read and dropped for a while
# (nginx's lingering close), rather than closed at once: a socket closed with unread bytes, or receiving more,
# answers with a reset, and a reset reaching the client before it has read the refusal makes its stack drop it.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024


class BoundedHeadProtocol(HttpToolsProtocol):
    """Refuses a request whose head (request line and headers) or trailers (the fields after a chunked body) grow
    past MAX_REQUEST_HEAD before they end, with a problem+json (414 when the URL alone is longer than MAX_URL, else
    431), and closes the connection: the rest is never read. Only reads that move a request on by nothing count,
    never a body: a read that begins or ends a head, or brings body bytes, is not counted (it is at most one read
    of the socket) and starts the count again; the reads in between a head's start and end, or after a chunked
    body's last bytes (its trailers), are. A head that takes longer than head_timeout_s to arrive (counted from the
    connection for its first request, else from the head's first byte) is a 408 problem, and the connection closes
    after lingering (LINGER_S)."""

    head_timeout_s = HEAD_TIMEOUT_S
    linger_s = LINGER_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_message = False
        self._in_head = False
        self._stalled_bytes = 0  # brought by the reads that moved the request on by nothing, since one that did
        self._moves = 0  # heads begun or ended, body bytes, messages ended: a read that saw one is not counted
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingered_bytes: int | None = None  # None until a refusal: then what arrived after it, dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingered_bytes is not None:  # refused: the parser never sees another byte
            self._lingered_bytes += len(data)
            if self._lingered_bytes > LINGER_BYTES:
                self.transport.close()
            return
        moves = self._moves
        super().data_received(data)
        moved = self._moves != moves
        if self._head_timer is None and (self._in_head or not (moved or self._in_message)):
            self._time_head()  # a head begun and not ended, or bytes that begin none (empty lines): timed from now on
        if moved:
            self._stalled_bytes = 0
            return
        if not self._in_message or self.transport.is_closing():
            return
        self._stalled_bytes += len(data)
        if self._stalled_bytes > MAX_REQUEST_HEAD:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = self._in_head = True
        self._moves += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        # A field after a chunked body (a trailer) is dropped: uvicorn appended it to the headers the app was already
        # reading, where a header absent when the app began could appear once it had read the body.
        if self._in_head:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._moves += 1
        self._stop_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._moves += 1
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._moves += 1
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_message:  # idle now: keep-alive's timer alone (stray bytes before this stopped it, not after)
            self._stop_head_timer()

    def _time_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused():
            return
        if self.cycle is not None and not self.cycle.response_complete:  # an answer still on its way comes first
            self._time_head()
            return
        log.warning("request head timed out", client=self.client)
        self._answer(408, f"The request head did not arrive within {self.head_timeout_s:g} s.")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser refuses, a problem like every other answer: a URL longer than httptools
        parses (its offsets are 16 bits: 65,535 bytes) arriving in one read is a 414, anything else a 400."""
        if self._refused():  # refused already
            return
        if self._url_too_long():
            self._answer(414, f"The URL is longer than {MAX_URL} bytes.")
        else:
            self._answer(400, "The request is not valid HTTP/1.1.")

    def _refuse(self) -> None:
        log.warning("request head refused", received=self._stalled_bytes, client=self.client)
        if not self._in_head and self.cycle.response_started:  # trailers after the app answered: no second answer
            self.transport.close()
            return
        if self._url_too_long():
            status, detail = 414, f"The URL is longer than {MAX_URL} bytes."
        else:
            status, detail = 431, f"The request line and headers are larger than {MAX_REQUEST_HEAD} bytes."
        self._answer(status, detail)

    def _refused(self) -> bool:
        return self._lingered_bytes is not None or self.transport.is_closing()

    def _url_too_long(self) -> bool:
        return len(getattr(self, "url", b"")) > MAX_URL  # uvicorn sets it when a request begins

    def _answer(self, status: int, detail: str) -> None:
        body = problem_bytes(status, detail)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {PROBLEM_JSON}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self._linger()

    def _linger(self) -> None:
        """Sends the end of the stream after the answer, then reads and drops what still comes until the client closes,
        LINGER_BYTES more have come, or linger_s have passed."""
        self._stop_head_timer()
        self._lingered_bytes = 0
        if self.cycle is not None and not self.cycle.response_complete:  # as uvicorn does when a connection is lost:
            self.cycle.disconnected = True  # the app's receive() says so, its send() writes nothing
            self.cycle.message_event.set()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.transport.resume_reading()  # uvicorn may have paused it for a body's flow control
        self._linger_timer = self.loop.call_later(self.linger_s, self.transport.close)
