"""Sending email: `.eml` files in embedded mode, SMTP otherwise (retried, circuit-broken)."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

import aiosmtplib

from gatherly.kernel.files import private_directory, write_private
from gatherly.kernel.resilience import Resilience


def compose(*, sender: str, to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="gatherly.local")
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver or raise; callers keep what failed and try again later."""
        ...

    async def close(self) -> None:
        """Let go of what the mailer holds open (at shutdown)."""
        ...


class FileMailer:
    """Writes each message as an RFC 5322 file to the mail folder (listed at /dev/mail)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(private_directory, self.folder)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        recipient = re.sub(r"[^A-Za-z0-9@._-]", "_", str(message["To"]))[:80]
        path = self.folder / f"{stamp}-{recipient}-{uuid.uuid4().hex[:8]}.eml"
        data = bytes(message)
        temporary = path.with_suffix(".tmp")
        # Write then rename, so a reader never sees half a message; only the owner may read people's mail.
        await asyncio.to_thread(write_private, temporary, data)
        await asyncio.to_thread(temporary.rename, path)

    async def close(self) -> None:
        """Nothing is held open between messages."""


class SmtpMailer:
    """Sends through an SMTP server over at most `connections` connections, each kept open for the next message
    (a new connection costs the connect, EHLO, STARTTLS and login round trips per message). A connection that broke
    is dropped and a new one opened on the retry; a message the server refused leaves its connection usable
    (aiosmtplib resets the envelope), so one refused message does not fail the others."""

    def __init__(
        self,
        resilience: Resilience,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        starttls: bool = True,
        connections: int = 10,
    ) -> None:
        self.resilience = resilience
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls = starttls
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[aiosmtplib.SMTP] = []
        self.opened = 0  # connections opened so far (for tests and benches)

    async def send(self, message: EmailMessage) -> None:
        await self.resilience.call("smtp", lambda: self._send(message), retry_on=(aiosmtplib.SMTPException, OSError))

    async def _send(self, message: EmailMessage) -> None:
        async with self._slots:
            client = await self._connection()
            try:
                await client.send_message(message)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
                self._keep(client)  # this message was refused; the session is reset and serves the next one
                raise
            except BaseException:
                client.close()  # broken, timed out or cancelled mid-message: its state is unknown
                raise
            self._keep(client)

    async def _connection(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:  # the server may have closed an idle one (its own timeout)
                return client
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username or None,
            password=self.password or None,
            start_tls=self.starttls,
            timeout=15,
        )
        await client.connect()
        self.opened += 1
        return client

    def _keep(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit(timeout=5)
            except (aiosmtplib.SMTPException, OSError):
                client.close()
