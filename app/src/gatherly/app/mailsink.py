"""An SMTP sink for the distributed stack: every message the services send over SMTP lands as an `.eml` file in the
mail folder, named and written as the file mailer writes them (so /dev/mail and the tests read both alike)."""

from __future__ import annotations

import asyncio
import signal
import sys
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from gatherly.kernel.mail import FileMailer


class MailFolder:
    """aiosmtpd's handler: each accepted message is written to the folder before the server says 250."""

    def __init__(self, folder: Path) -> None:
        self.mailer = FileMailer(folder)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        await self.mailer.send(message)
        return "250 Message accepted for delivery"


async def serve(folder: Path, port: int, host: str = "127.0.0.1") -> None:
    """Accept mail on host:port until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = MailFolder(folder)
    # No size limit of aiosmtpd's own (33 MiB by default) below what the services send; plain text, no STARTTLS.
    server = await loop.create_server(lambda: SMTP(handler, hostname="gatherly-mail-sink"), host, port)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    sys.stderr.write(f"mail sink on {host}:{port} writing to {folder}\n")
    await stopping.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    """`python -m gatherly.app.mailsink <mail-folder> <port>`."""
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
