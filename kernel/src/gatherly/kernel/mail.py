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


class SmtpMailer:
    def __init__(
        self,
        resilience: Resilience,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        starttls: bool = True,
    ) -> None:
        self.resilience = resilience
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls = starttls

    async def send(self, message: EmailMessage) -> None:
        async def deliver() -> None:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username or None,
                password=self.password or None,
                start_tls=self.starttls,
                timeout=15,
            )

        await self.resilience.call("smtp", deliver, retry_on=(aiosmtplib.SMTPException, OSError))
