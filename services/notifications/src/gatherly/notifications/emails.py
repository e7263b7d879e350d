"""Notification emails: rendered from templates (HTML + plain text, the account emails' look) with a one-click
unsubscribe link (RFC 8058 headers), and handed to the platform's mailer (files in embedded mode, SMTP otherwise).
sending.py claims, retries and records the sends."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from gatherly.kernel.mail import compose
from gatherly.kernel.runtime import ServiceContext
from gatherly.notifications.domain import Kind, unsubscribe_signature
from gatherly.notifications.store import Delivery, Notification, Recipient, reading

log = structlog.get_logger(__name__)


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
            subject=one_line(notification.title),
            text=self._text.get_template("notification.txt").render(values),
            html=self._html.get_template("notification.html").render(values),
            unsubscribe_link=unsubscribe,
        )


def one_line(text: str) -> str:
    """A header's text: titles come from people (an announcement's subject may hold line breaks), and a line break
    in a header is refused by the email library, which would fail that email on every attempt."""
    return " ".join(text.split())


def message_for(delivery: Delivery, mail: RenderedMail, *, sender: str, to: str) -> EmailMessage:
    message = compose(sender=sender, to=to, subject=mail.subject, text=mail.text, html=mail.html)
    # The send's idempotency key as the Message-ID: a message sent again after a crash between the SMTP server's
    # acceptance and our record of it carries the same id, which receivers and their filters deduplicate on.
    del message["Message-ID"]
    message["Message-ID"] = f"<{delivery.notification_id}.email@{MESSAGE_ID_DOMAIN}>"
    message["List-Unsubscribe"] = f"<{mail.unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return message


class EmailChannel:
    """Sends one notification by email to its person's current address."""

    def __init__(self, context: ServiceContext, templates: EmailTemplates) -> None:
        self.context = context
        self.templates = templates

    async def deliver(self, delivery: Delivery) -> bool:
        """True when handed to the mailer, False when there is nobody to send to any more; raises on failure."""
        async with reading(self.context.db) as stores:
            notification = await stores.inbox.get(delivery.notification_id)
            recipient = await stores.recipients.get(delivery.user_id)
        if notification is None or recipient is None or not recipient.mailable:
            return False
        message = message_for(
            delivery,
            self.templates.render(notification, recipient),
            sender=self.context.settings.mail_from,
            to=recipient.email or "",
        )
        await self.context.platform.mailer.send(message)
        return True
