"""The SMTP mailer against a real SMTP server (aiosmtpd): many messages over a few kept connections, a refused message
failing alone, and a connection the server closed replaced on the next message."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from gatherly.kernel.mail import SmtpMailer, compose
from gatherly.kernel.resilience import Resilience


@dataclass
class CountingServer:
    """Accepts every message but those to refused@…, counting the SMTP sessions (one EHLO per connection)."""

    sessions: int = 0
    accepted: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("refused@"):
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[CountingServer, Controller]]:
    server = CountingServer()
    controller = Controller(server, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield server, controller
    finally:
        if controller.loop.is_running():
            controller.stop()


def _mailer(controller: Controller, connections: int = 3) -> SmtpMailer:
    resilience = Resilience(attempts=2, wait_initial=0.01)
    return SmtpMailer(resilience, host="127.0.0.1", port=controller.port, starttls=False, connections=connections)


def _message(to: str) -> Any:
    return compose(sender="gatherly@example.org", to=to, subject="Hello", text="A line of text.")


async def test_many_messages_go_over_the_few_connections_kept_open(smtp: tuple[CountingServer, Controller]) -> None:
    server, controller = smtp
    mailer = _mailer(controller, connections=3)
    await asyncio.gather(*(mailer.send(_message(f"p{n}@example.org")) for n in range(30)))
    for n in range(10):  # one after another: always the same connection
        await mailer.send(_message(f"q{n}@example.org"))
    await mailer.close()
    assert len(server.accepted) == 40
    assert server.sessions == mailer.opened <= 3


async def test_a_refused_message_fails_alone_and_its_connection_carries_the_next(
    smtp: tuple[CountingServer, Controller],
) -> None:
    server, controller = smtp
    mailer = _mailer(controller, connections=1)
    await mailer.send(_message("first@example.org"))
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await mailer.send(_message("refused@example.org"))
    await mailer.send(_message("after@example.org"))
    await mailer.close()
    assert server.accepted == ["first@example.org", "after@example.org"]
    assert server.sessions == 1, "the refusal did not cost the connection"


async def test_a_connection_the_server_closed_is_replaced_on_the_next_message(
    smtp: tuple[CountingServer, Controller],
) -> None:
    server, controller = smtp
    mailer = _mailer(controller, connections=1)
    await mailer.send(_message("before@example.org"))
    # The server restarts on the same port (as one that closed its idle connections): the kept connection is dead.
    controller.stop()
    restarted = Controller(server, hostname="127.0.0.1", port=controller.port)
    restarted.start()
    try:
        await mailer.send(_message("after@example.org"))
        await mailer.close()
    finally:
        restarted.stop()
    assert server.accepted == ["before@example.org", "after@example.org"]
    assert mailer.opened == 2


async def test_a_server_that_is_down_fails_the_send_and_the_next_one_reconnects(
    smtp: tuple[CountingServer, Controller],
) -> None:
    server, controller = smtp
    mailer = _mailer(controller, connections=1)
    controller.stop()
    with pytest.raises(OSError):
        await mailer.send(_message("lost@example.org"))
    restarted = Controller(server, hostname="127.0.0.1", port=controller.port)
    restarted.start()
    try:
        await mailer.send(_message("back@example.org"))
        await mailer.close()
    finally:
        restarted.stop()
    assert server.accepted == ["back@example.org"]
