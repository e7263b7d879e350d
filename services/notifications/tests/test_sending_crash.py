"""A `gatherly up` SIGKILLed in the middle of sending notification emails through SMTP and web pushes to a push
service: after a restart every email reaches the SMTP server and every push the push service (counted by what each
accepted), and one is repeated only if it was in flight at the kill (accepted by the receiver, its record not yet
committed): an email always under the same Message-ID, the send's idempotency key, so a receiver that deduplicates
on it (as mailbox providers do) shows it once; a push with the same notification id in its payload."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from push_service import PushService, serving

from gatherly.app.services import ALL
from gatherly.app.testing import sign_up, start_gatherly, until_ready
from gatherly.kernel.db import Database
from gatherly.kernel.testing import DB_BACKENDS, scratch_databases
from gatherly.notifications.store import DeliveryStatus, reading

# Two `gatherly up` starts and 60 emails and pushes through slow receivers: over four minutes on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ANNOUNCEMENTS = 60
# What each channel's sender may have in flight at once (sending.CONCURRENCY): the most a kill can leave unrecorded.
IN_FLIGHT = 10


@dataclass
class SlowReceiver:
    """An SMTP server that takes `delay` seconds before accepting each message, and accepts it only if the client is
    still connected then (a real server takes responsibility for a message with its final 250, not before)."""

    mail_dir: Path
    port: int
    delay: float = 0.0
    accepted: list[tuple[str, str, str]] = field(default_factory=list)  # (to, subject, message id)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        transport = server.transport
        if transport is None or transport.is_closing():
            return "421 client gone"
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.accepted.append((str(message["To"]), str(message["Subject"]), str(message["Message-ID"])))
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        (self.mail_dir / f"{len(self.accepted):06d}.eml").write_bytes(envelope.content)
        return "250 Message accepted"

    def announcements_to(self, address: str) -> list[str]:
        return [mid for to, subject, mid in self.accepted if to == address and "Update " in subject]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        await asyncio.sleep(0.05)


async def _until_nothing_pending(url: str, timeout: float) -> None:
    db = Database(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            async with reading(db) as stores:
                if await stores.deliveries.count(DeliveryStatus.PENDING) == 0:
                    return
            assert time.monotonic() < deadline, "sends still pending"
            await asyncio.sleep(0.1)
    finally:
        await db.dispose()


def _pushed_announcements(push_service: PushService) -> list[str]:
    """The notification id of each announcement push the push service accepted."""
    return [payload["id"] for _, payload in push_service.received if payload["kind"] == "group_announcement"]


def _environment(data_dir: Path, database_url: str, smtp_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "GATHERLY_DATA_DIR": str(data_dir),
        "GATHERLY_DATABASE_URL": database_url,
        "GATHERLY_MIGRATE_ON_START": "true",
        "GATHERLY_MAIL_BACKEND": "smtp",
        "GATHERLY_SMTP_HOST": "127.0.0.1",
        "GATHERLY_SMTP_PORT": str(smtp_port),
        "GATHERLY_SMTP_STARTTLS": "false",
        "GATHERLY_PASSWORD_TIME_COST": "1",
        "GATHERLY_PASSWORD_MEMORY_KIB": "8",
        "GATHERLY_PASSWORD_PARALLELISM": "1",
        "GATHERLY_SIGNUP_LIMIT_PER_MINUTE": "0",
        "GATHERLY_LOGIN_LIMIT_PER_MINUTE": "0",
        "GATHERLY_MAIL_RETRY_INITIAL_DELAY": "0.1",
        # A send the killed process was making is taken over after this lease.
        "GATHERLY_NOTIFICATION_SEND_LEASE_SECONDS": "3",
        "GATHERLY_NOTIFICATION_POLL_INTERVAL": "0.2",
        "GATHERLY_LOG_JSON": "true",
        # `up` on 127.0.0.1 is in dev mode, so the push service on this machine is an endpoint it may post to.
    }


def _assert_each_once_but_what_was_in_flight(received: Counter[str], what: str) -> None:
    assert len(received) == ANNOUNCEMENTS, f"{what}: nothing lost"
    repeated = {key: n for key, n in received.items() if n > 1}
    assert sum(n - 1 for n in repeated.values()) <= IN_FLIGHT, (what, repeated)
    assert all(n == 2 for n in repeated.values()), (what, repeated)


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_a_sigkill_in_the_middle_of_sending_loses_no_email_or_push_and_repeats_only_what_was_in_flight(
    tmp_path: Path, database_backend: str
) -> None:
    data_dir = tmp_path / "data"
    receiver = SlowReceiver(data_dir / "mail", _free_port())
    controller = Controller(receiver, hostname="127.0.0.1", port=receiver.port)
    controller.start()
    port = _free_port()
    try:
        async with (
            serving(PushService()) as push_service,
            scratch_databases(database_backend, tmp_path, list(ALL)) as database_url,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
        ):
            env = _environment(data_dir, database_url, receiver.port)
            process = start_gatherly(env, "up", "--no-demo", "--port", str(port))
            try:
                await until_ready(client, process)
                push_service.vapid_public_key = (await client.get("/api/push/vapid-public-key")).json()["public_key"]
                running = SimpleNamespace(client=client, mail_dir=receiver.mail_dir)
                olga = await sign_up(running, display_name="Olga")  # type: ignore[arg-type]
                ann = await sign_up(running, display_name="Ann")  # type: ignore[arg-type]
                subscribed = await client.post(
                    "/api/push/subscriptions", json=push_service.subscription("ann-phone"), headers=ann.auth
                )
                assert subscribed.status_code == 201, subscribed.text
                group_id = (await client.post("/api/groups", json={"name": "Choir"}, headers=olga.auth)).json()["id"]
                joined = await client.post(f"/api/groups/{group_id}/join", json={}, headers=ann.auth)
                assert joined.status_code == 200

                # Slow enough that the kill lands while sends of both channels are in flight.
                receiver.delay = push_service.delay = 0.1
                for n in range(ANNOUNCEMENTS):
                    sent = await client.post(
                        f"/api/groups/{group_id}/announcements",
                        json={"subject": f"Update {n}", "body": "."},
                        headers=olga.auth,
                    )
                    assert sent.status_code == 202
                await _until(
                    lambda: (
                        len(receiver.announcements_to(ann.email)) >= 15
                        and len(_pushed_announcements(push_service)) >= 15
                    ),
                    "some emails and pushes",
                    60,
                )
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                emails_at_kill = len(receiver.announcements_to(ann.email))
                pushes_at_kill = len(_pushed_announcements(push_service))
                assert emails_at_kill < ANNOUNCEMENTS, "the kill came after every email: nothing was tested"
                assert pushes_at_kill < ANNOUNCEMENTS, "the kill came after every push: nothing was tested"

                process = start_gatherly(env, "up", "--no-demo", "--port", str(port))
                await until_ready(client, process)
                await _until(
                    lambda: (
                        len(set(receiver.announcements_to(ann.email))) == ANNOUNCEMENTS
                        and len(set(_pushed_announcements(push_service))) == ANNOUNCEMENTS
                    ),
                    "every email and push",
                    90,
                )
                # Every send recorded (the killed process's leased ones too): nothing more can come.
                await _until_nothing_pending(database_url.replace("{service}", "notifications"), timeout=30)
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)
    finally:
        controller.stop()

    emails = Counter(receiver.announcements_to(ann.email))
    pushes = Counter(_pushed_announcements(push_service))
    print(
        f"emails accepted before the kill: {emails_at_kill}; after: {emails.total()}, distinct: {len(emails)}; "
        f"pushes accepted before the kill: {pushes_at_kill}; after: {pushes.total()}, distinct: {len(pushes)}"
    )
    _assert_each_once_but_what_was_in_flight(emails, "emails")
    _assert_each_once_but_what_was_in_flight(pushes, "pushes")
    assert push_service.refused == [], "every push signed with the published VAPID key"
    # Each notification has its own Message-ID: one per notification, whether it was repeated or not.
    assert all(mid.endswith(".email@notifications.gatherly.local>") for mid in emails)
