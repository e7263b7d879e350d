"""The /dev/mail page: the emails embedded mode wrote as files, with their links clickable (dev mode only)."""

from __future__ import annotations

import asyncio
import functools
import html
import re
import urllib.parse
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from gatherly.kernel.errors import NotFound

LINK = re.compile(r"https?://[^\s<>\"']+")
SAFE_NAME = re.compile(r"^[A-Za-z0-9@._-]+\.eml$")


def read_message(path: Path) -> EmailMessage:
    return _parsed(path, path.stat().st_mtime_ns)


# A message file is written once (write, then rename) and never changed, so it is parsed once. Tests poll the
# mail folder every few milliseconds in the server's own event loop: parsing hundreds of messages on each poll
# starved the server they were waiting for (a mail took 10 to 20 s on a loaded machine).
@functools.lru_cache(maxsize=4096)
def _parsed(path: Path, modified_ns: int) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


CONFIRM_LINK = re.compile(r"/confirm\?token=([A-Za-z0-9_\-.~%]+)")


def messages_to(mail_dir: Path, address: str) -> list[EmailMessage]:
    """Messages written to `address` so far, oldest first."""
    if not mail_dir.exists():
        return []
    messages = [read_message(path) for path in sorted(mail_dir.glob("*.eml"))]
    return [m for m in messages if address.lower() in str(m["To"]).lower()]


def newest_link_token(mail_dir: Path, address: str, link: re.Pattern[str] = CONFIRM_LINK) -> str | None:
    """The token of the newest link of this kind mailed to `address` (confirmation by default)."""
    for message in reversed(messages_to(mail_dir, address)):
        if match := link.search(text_of(message)):
            return urllib.parse.unquote(match.group(1))
    return None


def _newest_messages(mail_dir: Path, limit: int) -> tuple[list[Path], list[tuple[Path, EmailMessage]]]:
    files = sorted(mail_dir.glob("*.eml"), reverse=True) if mail_dir.exists() else []
    return files, [(path, read_message(path)) for path in files[:limit]]


def _linkify(text: str) -> str:
    escaped = html.escape(text)
    return LINK.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)


def router(mail_dir: Path) -> APIRouter:
    routes = APIRouter()

    @routes.get("/dev/mail", include_in_schema=False)
    async def inbox() -> HTMLResponse:
        files, messages = await asyncio.to_thread(_newest_messages, mail_dir, 200)
        rows = []
        for path, message in messages:
            rows.append(
                f"<tr><td>{html.escape(str(message['Date']))}</td><td>{html.escape(str(message['To']))}</td>"
                f'<td><a href="/dev/mail/{html.escape(path.name)}">{html.escape(str(message["Subject"]))}</a></td></tr>'
            )
        body = "".join(rows) or '<tr><td colspan="3">No mail yet.</td></tr>'
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Dev mailbox</title>"
            "<style>body{font-family:system-ui;margin:2rem}td{padding:.25rem .75rem}</style>"
            f"<h1>Dev mailbox</h1><p>{len(files)} message(s) in {html.escape(str(mail_dir))}</p>"
            f"<table><tr><th>Date</th><th>To</th><th>Subject</th></tr>{body}</table>"
        )

    @routes.get("/dev/mail/{name}", include_in_schema=False)
    async def show(name: str) -> HTMLResponse:
        path = mail_dir / name
        if not SAFE_NAME.match(name) or not await asyncio.to_thread(path.is_file):
            raise NotFound("No such message.")
        message = await asyncio.to_thread(read_message, path)
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Message</title>"
            "<style>body{font-family:system-ui;margin:2rem}pre{white-space:pre-wrap}</style>"
            f'<p><a href="/dev/mail">← all mail</a></p><h1>{html.escape(str(message["Subject"]))}</h1>'
            f"<p>To: {html.escape(str(message['To']))}<br>From: {html.escape(str(message['From']))}</p>"
            f"<pre>{_linkify(text_of(message))}</pre>"
        )

    return routes
