"""The server's bound on a request head (request line and headers), over real sockets: uvicorn with httptools held
a 100 MiB request line in memory, and a head of any size, before an app could refuse it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gatherly.app.request_head import MAX_REQUEST_HEAD, BoundedHeadProtocol

MiB = 1024 * 1024


async def echo_sizes(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with how long the request's URL, headers and body were."""
    assert scope["type"] == "http"
    body = 0
    while True:
        message = await receive()
        body += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    sizes = {"path": len(scope["raw_path"]), "headers": sum(len(n) + len(v) for n, v in scope["headers"]), "body": body}
    payload = json.dumps(sizes).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, protocol: type[BoundedHeadProtocol] = BoundedHeadProtocol) -> AsyncIterator[int]:
    """The app served by uvicorn with the given HTTP protocol on a free local port, for the block's time."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=free, log_config=None, lifespan="off", http=protocol)
    server = uvicorn.Server(config)
    running = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's Server offers no event to wait on
        await asyncio.sleep(0.01)
    try:
        yield free
    finally:
        server.should_exit = True
        await running


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(echo_sizes) as free:
        yield free


async def send_in_pieces(port: int, request: bytes, piece: int = 16 * 1024) -> tuple[int, dict[str, Any], int]:
    """Sends `request` piece by piece until all is sent or the server stops reading; (status, JSON body, bytes
    sent). A blocking socket in a thread: asyncio's streams raise the reset a refusal causes before handing over
    the answer that came first."""
    return await asyncio.to_thread(_send_in_pieces, port, request, piece)


def _send_in_pieces(port: int, request: bytes, piece: int) -> tuple[int, dict[str, Any], int]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        sent = 0
        try:
            while sent < len(request):
                connection.sendall(request[sent : sent + piece])
                sent += piece
        except OSError:  # reset or broken pipe: the server closed while we were still sending, as a refusal does
            pass
        answer = _read_answer(connection)
    head, body = answer.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ")[1])
    assert status == 200 or b"application/problem+json" in head, head
    return status, json.loads(body), min(sent, len(request))


def _read_answer(connection: socket.socket) -> bytes:
    """One answer: its head, then as much body as its content-length says (less if the server closes first)."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
        chunk = connection.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def _length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0]
    return next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))


async def test_a_huge_request_line_is_a_414_problem_before_it_is_read(port: int) -> None:
    status, body, sent = await send_in_pieces(port, b"GET /" + b"a" * (64 * MiB) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body["status"]) == (414, 414)
    assert sent < 16 * MiB  # refused while arriving (what was sent sits in socket buffers), not after 64 MiB


async def test_huge_headers_are_a_431_problem_before_they_are_read(port: int) -> None:
    status, body, sent = await send_in_pieces(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (64 * MiB))
    assert (status, body["status"]) == (431, 431)
    assert sent < 16 * MiB


async def test_a_refused_head_is_a_problem_written_as_every_other(port: int) -> None:
    """The protocol's own refusals read as the problems the app writes (compact UTF-8 JSON, as a FastAPI handler's
    JSONResponse and kernel/limits.py's middlewares write theirs), not json.dumps' default spacing."""

    def answer_to(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            with contextlib.suppress(OSError):  # the refusal came while we were still sending
                connection.sendall(request)
            return _read_answer(connection).split(b"\r\n\r\n", 1)[1]

    huge_line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for request in (huge_line, b"NOT HTTP AT ALL\r\n\r\n"):
        body = await asyncio.to_thread(answer_to, request)
        assert body == json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":")).encode(), body


async def test_a_head_under_the_bound_arriving_in_small_pieces_and_a_large_body_pass(port: int) -> None:
    header = b"X-Big: " + b"b" * (MAX_REQUEST_HEAD - 2048) + b"\r\n"
    request = b"GET /" + b"p" * 1000 + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
    status, body, _ = await send_in_pieces(port, request, piece=512)
    assert status == 200 and body["path"] == 1001
    upload = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (4 * MiB) + b"z" * (4 * MiB)
    status, body, _ = await send_in_pieces(port, upload, piece=256 * 1024)
    assert status == 200 and body["body"] == 4 * MiB


async def test_what_the_parser_refuses_is_a_problem_too(port: int) -> None:
    """A URL past what httptools parses (65,535 bytes) arriving in one read, and a request that is not HTTP: uvicorn
    answered both with a plain-text 400."""
    status, body, _ = await send_in_pieces(port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", piece=MiB)
    assert (status, body["status"]) == (414, 414)
    status, body, _ = await send_in_pieces(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert (status, body["status"]) == (400, 400)


async def test_huge_trailers_of_a_chunked_body_are_a_431_problem_before_they_are_read(port: int) -> None:
    """Trailer fields come after a chunked body, outside the head: httptools held them (uvicorn appended them to the
    request's headers) up to any size, 31 MiB of them grew `gatherly up` by as much (an outsider's probe)."""
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    trailers = b"".join(b"X-T%d: " % n + b"t" * 8000 + b"\r\n" for n in range(8 * 1024))  # 64 MiB
    status, body, sent = await send_in_pieces(port, head + b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n")
    assert (status, body["status"]) == (431, 431)
    assert sent < 16 * MiB


async def test_a_large_chunked_body_in_small_chunks_with_small_trailers_passes(port: int) -> None:
    chunks = b"".join(b"%x\r\n" % 100 + b"c" * 100 + b"\r\n" for _ in range(20_000))  # 2 MB of body, 2.5 MB sent
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    request = head + chunks + b"0\r\nX-T: 1\r\n\r\n"
    status, body, _ = await send_in_pieces(port, request, piece=64)
    assert status == 200 and body["body"] == 2_000_000


async def test_trailers_never_join_the_request_headers(port: int) -> None:
    """uvicorn appended a chunked body's trailer fields to the scope's headers, which the app was already reading:
    a header absent when the app began (an Authorization, say) could appear once it had read the body."""
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    _, plain, _ = await send_in_pieces(port, head + b"\r\n")
    _, trailed, _ = await send_in_pieces(port, head + b"Authorization: Bearer x\r\n\r\n")
    assert trailed == plain and plain["body"] == 5


class QuickHeads(BoundedHeadProtocol):
    head_timeout_s = 0.5


@pytest.fixture
async def quick_port() -> AsyncIterator[int]:
    async with serving(echo_sizes, QuickHeads) as free:
        yield free


def _talk(port: int, pieces: list[bytes], pause: float) -> bytes:
    """Sends the pieces `pause` seconds apart, then reads until the server closes or 30 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        for piece in pieces:
            connection.sendall(piece)
            time.sleep(pause)
        return _read_answer(connection)


async def test_a_head_that_does_not_arrive_in_time_is_a_408_problem(quick_port: int) -> None:
    """uvicorn held a connection trickling its head (slowloris), or sending nothing, open for ever."""
    for pieces in ([b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "], []):
        answer = await asyncio.to_thread(_talk, quick_port, pieces, 0)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in head, head
        assert json.loads(body)["status"] == 408


async def test_a_slow_body_after_a_head_in_time_passes(quick_port: int) -> None:
    body = [b"b" * 100] * 4
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n"
    answer = await asyncio.to_thread(_talk, quick_port, [head, *body], 0.3)  # 1.2 s of body, the head timer is 0.5 s
    assert answer.startswith(b"HTTP/1.1 200 ") and json.loads(answer.split(b"\r\n\r\n", 1)[1])["body"] == 400


async def test_blank_lines_trickled_between_requests_are_no_head_in_time(quick_port: int) -> None:
    """The parser skips empty lines before a request line without beginning a request, and any byte stopped
    uvicorn's keep-alive timer: a connection could be held open with a line break a minute."""
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await asyncio.to_thread(_talk_until_closed, quick_port, [first, *[b"\r\n"] * 6], 0.25)
    assert re.findall(rb"HTTP/1.1 (\d+) ", answers) == [b"200", b"408"]


def _talk_until_closed(port: int, pieces: list[bytes], pause: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        try:
            for piece in pieces:
                connection.sendall(piece)
                time.sleep(pause)
        except OSError:  # closed by the server while we were still sending
            pass
        answers = b""
        while chunk := connection.recv(65536):
            answers += chunk
        return answers


async def test_an_idle_keep_alive_connection_is_not_a_late_head(quick_port: int) -> None:
    """Between requests the connection is idle, not late: only keep-alive's own timer (5 s here) closes it."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await asyncio.to_thread(_talk_until_closed, quick_port, [request, request], 1.5)  # head timer 0.5 s
    assert re.findall(rb"HTTP/1.1 (\d+) ", answers) == [b"200", b"200"]


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers before reading the body, as a route that needs none does."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_huge_trailers_after_the_answer_close_the_connection_without_a_second_answer() -> None:
    async with serving(answer_at_once) as free:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
        trailers = [b"X-T%d: " % n + b"t" * 8000 + b"\r\n" for n in range(1024)]  # 8 MiB
        answers = await asyncio.to_thread(_talk_until_closed, free, [head, *trailers], 0)
        assert re.findall(rb"HTTP/1.1 (\d+) ", answers) == [b"204"]


async def slow_answer(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await asyncio.sleep(3)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_a_stray_line_break_before_the_answer_leaves_the_idle_connection_to_keep_alive() -> None:
    """Some clients end a body with a line break more; arriving while the answer is made, it must not leave the head
    timer running into the idle time after it (a 408 written on an idle connection races a proxy's next request)."""
    async with serving(slow_answer, QuickHeads) as free:
        answers = await asyncio.to_thread(_stray_line_break_then_idle, free)
        assert re.findall(rb"HTTP/1.1 (\d+) ", answers) == [b"204", b"204"]


def _stray_line_break_then_idle(port: int) -> bytes:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        time.sleep(0.1)
        connection.sendall(b"\r\n")  # the answer takes 3 s
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 1:
            answers += connection.recv(65536)
        time.sleep(1.5)  # idle: the head timer is 0.5 s, keep-alive 5 s
        connection.sendall(request)
        while answers.count(b"HTTP/1.1 ") < 2 and (chunk := connection.recv(65536)):
            answers += chunk
        return answers


class QuickLinger(BoundedHeadProtocol):
    linger_s = 0.5


def _refused_then_more(port: int, more: int, pause: float = 0.0) -> tuple[bytes, bool, int]:
    """Sends an oversized head, reads the whole answer and the end of the server's stream, waits `pause` s, then
    sends `more` bytes in pieces: (the answer, whether the stream ended cleanly, bytes sent before the server was
    gone)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server refused and went while we sent (before it lingered)
            for _ in range(4 * MAX_REQUEST_HEAD // 4096):  # reads of their own, each moving the head on by nothing
                connection.sendall(b"b" * 4096)
                time.sleep(0.001)
        answer, clean = b"", True
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            clean = False
        time.sleep(pause)
        sent = 0
        try:
            while sent < more:
                connection.sendall(b"m" * 16384)
                sent += 16384
                time.sleep(0.001)
        except OSError:  # reset or broken pipe: the server is gone
            pass
        return answer, clean, sent


async def test_a_refusal_lingers_so_the_client_reads_it_before_the_connection_goes() -> None:
    """The server closed right after the refusal with the client's bytes still unread, which makes the kernel send
    a reset rather than the end of the stream; a reset reaching the client before it reads the answer loses it
    (nginx lingers for this reason). Now the stream ends cleanly after the answer, and what the client still sends
    is read and dropped for a while, so its sends meet no reset."""
    async with serving(echo_sizes) as free:
        answer, clean, sent = await asyncio.to_thread(_refused_then_more, free, 256 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 ") and json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == 431
    assert clean and sent == 256 * 1024


async def test_a_lingering_connection_is_closed_after_its_time_or_bytes() -> None:
    async with serving(echo_sizes, QuickLinger) as free:
        _, _, sent = await asyncio.to_thread(_refused_then_more, free, 256 * 1024, 1.5)  # linger 0.5 s
        assert sent < 256 * 1024
    async with serving(echo_sizes) as free:  # linger 2 s, but no more than LINGER_BYTES
        _, _, sent = await asyncio.to_thread(_refused_then_more, free, 64 * MiB)
        assert sent < 16 * MiB
