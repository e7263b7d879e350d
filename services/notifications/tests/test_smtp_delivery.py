"""Email through the SMTP adapter against a real SMTP server the test starts (aiosmtpd): what the receiver gets,
once per notification, with the RFC 8058 headers; a refused send retried a bounded number of times, then recorded
as failed, listed by `gatherly notifications failed` and sent again (once) by `gatherly notifications retry`."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from gatherly.app.cli import app as cli
from gatherly.app.testing import running_gatherly, sign_up
from gatherly.kernel.testing import DB_BACKENDS

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 8,
    "password_parallelism": 1,
    "signup_limit_per_minute": 0,
    "login_limit_per_minute": 0,
    "mail_retry_initial_delay": 0.05,
    "mail_retry_max_delay": 0.2,
    "notification_retry_initial_delay": 0.05,
    "notification_retry_max_delay": 0.2,
    "notification_poll_interval": 0.2,
    # One attempt: the refused send is recorded as failed at once (the SMTP adapter itself tries 3 times).
    "notification_send_attempts": 1,
}


@dataclass
class Receiver:
    """An aiosmtpd handler: keeps every message it accepts, refuses recipients named in `refuse`, and also writes
    accepted messages to the mail folder so the test helpers that read confirmation links work unchanged."""

    mail_dir: Path
    port: int = 0
    refuse: set[str] = field(default_factory=set)
    received: list[EmailMessage] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        (self.mail_dir / f"{len(self.received):06d}-{envelope.rcpt_tos[0]}.eml").write_bytes(envelope.content)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.received if m["To"] == address]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    handler = Receiver(tmp_path_factory.mktemp("smtp") / "data" / "mail", port=_free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def smtp_gatherly(request: pytest.FixtureRequest, receiver: Receiver) -> AsyncIterator[Any]:
    async with running_gatherly(
        receiver.mail_dir.parent,
        database_backend=request.param,
        mail_backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=receiver.port,
        smtp_starttls=False,
        **FAST,
    ) as running:
        yield running


async def _wait(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        await asyncio.sleep(0.05)


async def _announce(running: Any, subject: str) -> tuple[Any, Any]:
    olga = await sign_up(running, display_name="Olga")
    ann = await sign_up(running, display_name="Ann")
    created = await running.client.post("/api/groups", json={"name": "Choir"}, headers=olga.auth)
    group_id = created.json()["id"]
    joined = await running.client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=ann.auth)
    assert joined.status_code == 200
    await running.settle()
    sent = await running.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": subject, "body": "Sing!"}, headers=olga.auth
    )
    assert sent.status_code == 202
    await running.settle()
    return olga, ann


async def test_the_smtp_server_gets_each_notification_once_with_its_unsubscribe_headers(
    smtp_gatherly: Any, receiver: Receiver
) -> None:
    _, ann = await _announce(smtp_gatherly, "Concert")
    await _wait(lambda: [m for m in receiver.to(ann.email) if "Concert" in str(m["Subject"])], "the concert email")
    [mail] = [m for m in receiver.to(ann.email) if "Concert" in str(m["Subject"])]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].startswith("<http://localhost:8000/api/notifications/unsubscribe?")
    assert mail["Message-ID"].endswith(".email@notifications.gatherly.local>")
    assert mail.get_body(preferencelist=("html",)) is not None
    assert "Sing!" in mail.get_body(preferencelist=("plain",)).get_content()


async def test_a_subject_with_line_breaks_is_sent_on_one_line(smtp_gatherly: Any, receiver: Receiver) -> None:
    """A line break in a header would fail the email on every attempt (and could inject headers)."""
    _, ann = await _announce(smtp_gatherly, "Rehearsal moved\r\nBcc: someone@example.org")
    await _wait(lambda: [m for m in receiver.to(ann.email) if "Rehearsal" in str(m["Subject"])], "the email")
    [mail] = [m for m in receiver.to(ann.email) if "Rehearsal" in str(m["Subject"])]
    assert mail["Subject"] == "Choir: Rehearsal moved Bcc: someone@example.org"
    assert mail["Bcc"] is None


async def test_a_refused_send_is_recorded_listed_and_sent_once_by_retry(
    smtp_gatherly: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    olga = await sign_up(smtp_gatherly, display_name="Olga")
    ann = await sign_up(smtp_gatherly, display_name="Ann")
    receiver.refuse.add(ann.email)
    created = await smtp_gatherly.client.post("/api/groups", json={"name": "Band"}, headers=olga.auth)
    group_id = created.json()["id"]
    await smtp_gatherly.client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=ann.auth)
    await smtp_gatherly.settle()
    await smtp_gatherly.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "Gig", "body": "Play!"}, headers=olga.auth
    )
    await smtp_gatherly.settle()

    monkeypatch.setenv("GATHERLY_DATABASE_URL", smtp_gatherly.settings.database_url.get_secret_value())
    monkeypatch.setenv("GATHERLY_DATA_DIR", str(smtp_gatherly.settings.data_dir))
    runner = CliRunner()

    async def listed() -> str:
        return (await asyncio.to_thread(runner.invoke, cli, ["notifications", "failed"], env={"COLUMNS": "300"})).output

    deadline = time.monotonic() + 20
    while ":email" not in (output := await listed()):  # the table's send id (log lines may come before it)
        assert time.monotonic() < deadline, output
        await asyncio.sleep(0.1)
    assert "451" in output.split(":email", 1)[1], "the SMTP server's refusal is the recorded error"
    assert not receiver.to(ann.email)[1:], "nothing but her confirmation email got through"

    receiver.refuse.discard(ann.email)
    retried = await asyncio.to_thread(runner.invoke, cli, ["notifications", "retry"])
    assert "queued 1 send(s) again" in retried.output, retried.output
    await _wait(lambda: [m for m in receiver.to(ann.email) if "Gig" in str(m["Subject"])], "the gig email")
    # Sent once: the sender has nothing left, and another retry finds nothing to queue.
    again = await asyncio.to_thread(runner.invoke, cli, ["notifications", "retry"])
    assert "queued 0 send(s) again" in again.output
    assert len([m for m in receiver.to(ann.email) if "Gig" in str(m["Subject"])]) == 1
    assert ":email" not in await listed()
