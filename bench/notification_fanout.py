"""Fan-out of a new event in a large group: how long until every member's in-app notification is stored, and how
fast the emails reach an SMTP server compared with what that server accepts on its own, in the same run.

Embedded mode (every service in this process, SQLite files, the embedded log). The members are made the way the
notifications service learns of them: `user.confirmed` and `membership.joined` published on the log as the users
and groups services would (signing 10,000 people up through the API would measure password hashing). The event is
scheduled through the API by a real organizer. The SMTP server is aiosmtpd on loopback.

    uv run python bench/notification_fanout.py [--members 10000] [--report bench/reports/notification_fanout.md]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from gatherly.app.testing import running_gatherly, sign_up
from gatherly.contracts.groups import MembershipJoined
from gatherly.contracts.users import UserConfirmed
from gatherly.kernel.messages import Envelope
from gatherly.notifications.store import DeliveryStatus
from gatherly.notifications.tables import deliveries, notifications


@dataclass
class Receiver:
    """Counts what it accepts; writes the organizer's confirmation email where the sign-up helper looks."""

    mail_dir: Path
    accepted: int = 0
    first_at: float | None = None
    last_at: float = 0.0
    confirmations: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.perf_counter()
        self.accepted += 1
        self.first_at = self.first_at or now
        self.last_at = now
        if not envelope.rcpt_tos[0].startswith("member-"):
            self.mail_dir.mkdir(parents=True, exist_ok=True)
            (self.mail_dir / f"{uuid.uuid4().hex}.eml").write_bytes(envelope.content)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_message(n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bench@example.org", f"member-x{n}@example.org", "x"
    message.set_content("x" * 1500)  # about the size of a notification email
    return message


async def receiver_rate(port: int, messages: int, concurrency: int = 10) -> float:
    """The SMTP server's own accept rate: messages/s from plain aiosmtplib clients, a new connection per message,
    `concurrency` at once."""
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with slots:
            await aiosmtplib.send(bench_message(n), hostname="127.0.0.1", port=port, start_tls=False)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(messages)))
    return messages / (time.perf_counter() - started)


async def receiver_rate_kept(port: int, messages: int, connections: int = 10) -> float:
    """The same server's accept rate over `connections` connections kept open, as the notification sender uses."""

    async def worker(numbers: range) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            for n in numbers:
                await client.send_message(bench_message(n))

    started = time.perf_counter()
    await asyncio.gather(*(worker(range(w, messages, connections)) for w in range(connections)))
    return messages / (time.perf_counter() - started)


@dataclass
class Usage:
    """This process's CPU time and the machine's load average over a stretch of the run."""

    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    load_started: float = field(default_factory=lambda: os.getloadavg()[0])

    def done(self) -> tuple[float, float, float, float]:
        """(seconds, CPU seconds, load average at the start, at the end)."""
        return (
            time.perf_counter() - self.started,
            time.process_time() - self.cpu_started,
            self.load_started,
            os.getloadavg()[0],
        )


async def count(running: Any, query: Any) -> int:
    async with running.process.host("notifications").context.db.read_session() as session:
        return int(await session.scalar(query) or 0)


async def until(counted: Callable[[], Awaitable[int]], target: int, interval: float, timeout: float) -> int:
    """Look every `interval` seconds until the count reaches `target` or `timeout` passes; returns the count (short
    of the target after the timeout: the report then says how far it got, instead of losing the run)."""
    deadline = time.perf_counter() + timeout
    while True:
        value = await counted()
        if value >= target or time.perf_counter() >= deadline:
            return value
        await asyncio.sleep(interval)


async def run(members: int, profile: Path | None = None, timeout: float = 7200) -> str:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        receiver = Receiver(data_dir / "mail")
        port = free_port()
        controller = Controller(receiver, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            own_rate = await receiver_rate(port, 2000)
            kept_rate = await receiver_rate_kept(port, 2000)
            receiver.accepted, receiver.first_at = 0, None
            async with running_gatherly(
                data_dir,
                password_time_cost=1,
                password_memory_kib=8,
                password_parallelism=1,
                mail_backend="smtp",
                smtp_host="127.0.0.1",
                smtp_port=port,
                smtp_starttls=False,
            ) as running:
                organizer = await sign_up(running, display_name="Organizer")
                group = await running.client.post("/api/groups", json={"name": "Big Group"}, headers=organizer.auth)
                group_id = group.json()["id"]
                await running.settle()
                now = datetime.now(UTC)
                log = running.process.platform.log
                for start in range(0, members, 1000):
                    batch: list[Any] = []
                    for n in range(start, min(start + 1000, members)):
                        user_id = str(uuid.uuid4())
                        batch.append(
                            UserConfirmed(
                                user_id=user_id, email=f"member-{n}@example.org", display_name=f"M{n}", confirmed_at=now
                            )
                        )
                        batch.append(
                            MembershipJoined(
                                group_id=group_id, user_id=user_id, role="member", via="open", joined_at=now
                            )
                        )
                    await log.publish([Envelope.wrap(event, now).to_message() for event in batch])
                await running.settle(timeout=1800)

                before_mail = receiver.accepted
                receiver.first_at = None  # the organizer's own emails came before
                starts = now + timedelta(days=7)
                body = {
                    "group_id": group_id,
                    "title": "Everyone welcome",
                    "starts_at": starts.isoformat(),
                    "ends_at": (starts + timedelta(hours=2)).isoformat(),
                    "timezone": "UTC",
                    "online_url": "https://meet.example.org/all",
                }
                whole = Usage()
                scheduled = await running.client.post("/api/events", json=body, headers=organizer.auth)
                assert scheduled.status_code == 201, scheduled.text
                told = select(func.count()).select_from(notifications).where(notifications.c.kind == "event_scheduled")
                await until(lambda: count(running, told), members, 0.05, timeout=600)
                in_app, in_app_cpu, load_at_post, load_in_app = whole.done()
                sending = Usage()
                sent = select(func.count()).select_from(deliveries).where(deliveries.c.status == DeliveryStatus.SENT)
                if profile is not None:
                    profiler = cProfile.Profile()
                    profiler.enable()
                done = await until(lambda: count(running, sent), members, 0.1, timeout=timeout)
                if profile is not None:
                    profiler.disable()
                    profiler.dump_stats(profile)
                emails, emails_cpu, _, load_at_end = whole.done()
                _, after_in_app_cpu, _, _ = sending.done()
                got = receiver.accepted - before_mail
                first_mail = (receiver.first_at or whole.started) - whole.started
                mail_span = receiver.last_at - (receiver.first_at or receiver.last_at)
                connections = getattr(running.process.platform.mailer, "opened", None)
        finally:
            controller.stop()
    email_rate = done / emails
    lines = [
        "# Notification fan-out (bench/notification_fanout.py)",
        "",
        f"A new event in a group of {members:,} members, embedded mode (SQLite), SMTP to aiosmtpd on loopback (in the",
        "same process, on its own thread: its work is part of the CPU figures).",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| every in-app notification stored (from the POST) | {in_app:.1f} s (target < 10 s) |",
        f"| CPU of the process until then | {in_app_cpu:.1f} s |",
        f"| every email accepted by the SMTP server (from the POST) | {emails:.1f} s |",
        f"| first email accepted (from the POST) | {first_mail:.1f} s |",
        f"| emails per second, end to end (from the POST) | {email_rate:,.0f}/s |",
        f"| emails per second, first to last accepted | {(got - 1) / mail_span if mail_span else 0:,.0f}/s |",
        f"| CPU of the process, whole run from the POST / after the in-app part | {emails_cpu:.1f} s /"
        f" {after_in_app_cpu:.1f} s ({1000 * after_in_app_cpu / max(done, 1):.1f} ms per email) |",
        f"| the SMTP server's own accept rate, a new connection per message, 10 at once | {own_rate:,.0f}/s |",
        f"| the SMTP server's own accept rate, 10 connections kept open | {kept_rate:,.0f}/s |",
        f"| emails the server accepted / SMTP connections the sender opened | {got:,} / {connections} |",
        f"| emails recorded as sent when the run ended | {done:,} of {members:,} |",
        f"| load average (1 min) at the POST / in-app done / end | {load_at_post:.1f} / {load_in_app:.1f} /"
        f" {load_at_end:.1f} |",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on the shared 2-core machine.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile stats of the email part, to this file")
    parser.add_argument("--timeout", type=float, default=7200, help="stop waiting for the emails after this (s)")
    args = parser.parse_args()
    text = asyncio.run(run(args.members, args.profile, args.timeout))
    print(text)
    if args.report is not None:
        args.report.write_text(text)


if __name__ == "__main__":
    main()
