"""Notification emails: rendered from templates (HTML + plain text, the account emails' look) with a one-click
unsubscribe link (RFC 8058 headers), and sent by a background sender that claims due sends with a lease, retries
with backoff a bounded number of times through the channel's circuit breaker, and records what still fails."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from prometheus_client import Counter

from gatherly.kernel.mail import compose
from gatherly.kernel.resilience import CircuitOpen
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import OutboxSignal
from gatherly.notifications.domain import Channel, Kind, unsubscribe_signature
from gatherly.notifications.store import Delivery, Notification, Recipient, Stores

log = structlog.get_logger(__name__)

_Change = Callable[[Stores], Awaitable[None]]

# Outcomes of send attempts: sent | retry (failed, tried again later) | gave_up (recorded as failed) |
# postponed (the channel's circuit is open: not an attempt) | dropped (nobody to send to any more).
SENDS = Counter("gatherly_notification_sends_total", "Notification send attempts by outcome", ["channel", "outcome"])

# The circuit breaker of the email channel (the kernel's SMTP adapter has its own around each connection).
EMAIL_CIRCUIT = "notifications.email"
MESSAGE_ID_DOMAIN = "notifications.gatherly.local"
# Where the templates (with the unsubscribe key) are kept (ServiceContext.extras).
TEMPLATES = "email_templates"


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    unsubscribe_link: str


class EmailTemplates:
    """Renders a notification twice from one context: HTML (autoescaped) and plain text."""

    def __init__(self, public_url: str, unsubscribe_key: bytes) -> None:
        self.public_url = public_url
        self.unsubscribe_key = unsubscribe_key
        loader = PackageLoader("gatherly.notifications", "templates")
        self._html = Environment(loader=loader, autoescape=select_autoescape(["html"]), undefined=StrictUndefined)
        self._text = Environment(loader=loader, autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)

    def unsubscribe_link(self, user_id: str, kind: Kind) -> str:
        query = urllib.parse.urlencode(
            {"user": user_id, "kind": kind.value, "sig": unsubscribe_signature(self.unsubscribe_key, user_id, kind)}
        )
        return f"{self.public_url}/api/notifications/unsubscribe?{query}"

    def render(self, notification: Notification, recipient: Recipient) -> RenderedMail:
        unsubscribe = self.unsubscribe_link(notification.user_id, notification.kind)
        values = {
            "subject": notification.title,
            "display_name": recipient.display_name or "there",
            "title": notification.title,
            "body": notification.body,
            "link": f"{self.public_url}{notification.link}",
            "public_url": self.public_url,
            "unsubscribe_link": unsubscribe,
            "settings_link": f"{self.public_url}/settings/notifications",
        }
        return RenderedMail(
            subject=notification.title,
            text=self._text.get_template("notification.txt").render(values),
            html=self._html.get_template("notification.html").render(values),
            unsubscribe_link=unsubscribe,
        )


def message_for(delivery: Delivery, mail: RenderedMail, *, sender: str, to: str) -> EmailMessage:
    message = compose(sender=sender, to=to, subject=mail.subject, text=mail.text, html=mail.html)
    # The send's idempotency key as the Message-ID: a message sent again after a crash between the SMTP server's
    # acceptance and our record of it carries the same id, which receivers and their filters deduplicate on.
    del message["Message-ID"]
    message["Message-ID"] = f"<{delivery.notification_id}.email@{MESSAGE_ID_DOMAIN}>"
    message["List-Unsubscribe"] = f"<{mail.unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return message


def retry_delay(attempts: int, initial: float, longest: float) -> timedelta:
    """Doubling per failed attempt, capped."""
    return timedelta(seconds=min(longest, initial * 2 ** min(attempts, 30)))


BATCH = 100
CIRCUIT_OPEN_WAIT = timedelta(seconds=1)
# Sends in flight at once: enough to keep an SMTP server busy, few enough not to look like a flood.
CONCURRENCY = 10


class EmailSender:
    """Delivers due email sends through the platform's mailer (files in embedded mode, SMTP otherwise)."""

    def __init__(self, context: ServiceContext, templates: EmailTemplates, signal: OutboxSignal) -> None:
        self.context = context
        self.templates = templates
        self.signal = signal
        settings = context.settings
        self.attempts = settings.notification_send_attempts
        self.initial_delay = settings.notification_retry_initial_delay
        self.longest_delay = settings.notification_retry_max_delay
        self.poll_interval = settings.notification_poll_interval
        self.lease = timedelta(seconds=settings.notification_send_lease_seconds)
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> None:
        """Until cancelled: send what is due, then sleep until woken by a commit, the next retry, or the poll.
        A failing round raises: the host's supervisor logs it and restarts the sender with backoff."""
        while True:
            await self.send_due()
            await self.signal.wait(await self._seconds_until_next())

    async def send_due(self) -> int:
        """Send every email due now; returns how many were delivered."""
        delivered = 0
        while True:
            claimed = await self._claim()
            if not claimed:
                return delivered
            results = await asyncio.gather(*(self._send(delivery) for delivery in claimed))
            delivered += sum(results)
            if len(claimed) < BATCH:
                return delivered

    async def _claim(self) -> list[Delivery]:
        async with self.context.db.writing() as session:
            now = self.context.clock.now()
            return await Stores(session).deliveries.claim_due(Channel.EMAIL, now, self.lease, BATCH)

    async def _send(self, delivery: Delivery) -> int:
        async with self._slots:
            async with self.context.db.read_session() as session:
                stores = Stores(session)
                notification = await stores.inbox.get(delivery.notification_id)
                recipient = await stores.recipients.get(delivery.user_id)
            if notification is None or recipient is None or not recipient.mailable:
                await self._record(lambda s: s.deliveries.dropped(delivery.id, "nobody to send to any more"))
                SENDS.labels(Channel.EMAIL.value, "dropped").inc()
                return 0
            message = message_for(
                delivery,
                self.templates.render(notification, recipient),
                sender=self.context.settings.mail_from,
                to=recipient.email or "",
            )
            mailer = self.context.platform.mailer
            try:
                await self.context.platform.resilience.call(EMAIL_CIRCUIT, lambda: mailer.send(message), attempts=1)
            except CircuitOpen:
                # Not an attempt: the channel is resting after failures. Look again shortly; the breaker lets a
                # trial call through once its time is up.
                retry_at = self.context.clock.now() + CIRCUIT_OPEN_WAIT
                await self._record(lambda s: s.deliveries.postpone(delivery.id, retry_at))
                SENDS.labels(Channel.EMAIL.value, "postponed").inc()
                return 0
            except Exception as error:
                # Whatever the mailer raised (SMTP refusal, network, full disk), the send is kept and retried.
                await self._failed(delivery, error)
                return 0
            await self._record(lambda s: s.deliveries.sent(delivery.id, self.context.clock.now()))
            SENDS.labels(Channel.EMAIL.value, "sent").inc()
            return 1

    async def _failed(self, delivery: Delivery, error: Exception) -> None:
        attempts = delivery.attempts + 1
        retry_at: datetime | None = None
        if attempts < self.attempts:
            retry_at = self.context.clock.now() + retry_delay(delivery.attempts, self.initial_delay, self.longest_delay)
        log.warning(
            "notification email not delivered",
            delivery=delivery.id,
            attempts=attempts,
            gave_up=retry_at is None,
            error=repr(error),
        )
        await self._record(lambda s: s.deliveries.failed(delivery.id, repr(error), retry_at=retry_at))
        SENDS.labels(Channel.EMAIL.value, "retry" if retry_at is not None else "gave_up").inc()

    async def _record(self, change: _Change) -> None:
        async with self.context.db.writing() as session:
            await change(Stores(session))

    async def _seconds_until_next(self) -> float:
        async with self.context.db.read_session() as session:
            next_due = await Stores(session).deliveries.next_due_at()
        if next_due is None:
            return self.poll_interval
        until = (next_due - self.context.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, until))
