"""Notification emails, and invitations mailed to addresses with no account: rendered from templates (HTML + plain
text, the account emails' look) with a one-click unsubscribe link (RFC 8058 headers), and handed to the platform's
mailer (files in embedded mode, SMTP otherwise). sending.py claims, retries and records the sends."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from gatherly.kernel.addresses import address_hash
from gatherly.kernel.mail import compose
from gatherly.kernel.runtime import ServiceContext
from gatherly.notifications.domain import InvitationMail, Kind, opt_out_signature, unsubscribe_signature
from gatherly.notifications.store import Delivery, Notification, Recipient, Stores, reading

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

    def opt_out_link(self, email_hash: str) -> str:
        query = urllib.parse.urlencode(
            {"address": email_hash, "sig": opt_out_signature(self.unsubscribe_key, email_hash)}
        )
        return f"{self.public_url}/api/notifications/invitations/opt-out?{query}"

    def render_invitation(self, mail: InvitationMail) -> RenderedMail:
        """An invitation to an address: the notifications' look, with the invitations opt-out instead of settings."""
        opt_out = self.opt_out_link(address_hash(mail.email))
        values = {
            "subject": mail.title,
            "title": mail.title,
            "body": mail.body,
            "link": f"{self.public_url}{mail.link}",
            "public_url": self.public_url,
            "unsubscribe_link": opt_out,
        }
        return RenderedMail(
            subject=one_line(mail.title),
            text=self._text.get_template("invitation.txt").render(values),
            html=self._html.get_template("invitation.html").render(values),
            unsubscribe_link=opt_out,
        )

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


class InvitationMailChannel:
    """Sends an invitation to an address with no account, then forgets the address and its live link."""

    def __init__(self, context: ServiceContext, templates: EmailTemplates) -> None:
        self.context = context
        self.templates = templates

    async def deliver(self, delivery: Delivery) -> bool:
        """True when handed to the mailer, False when there is nothing to send (already sent, opted out since, or
        lapsed while the send waited); raises on failure."""
        async with reading(self.context.db) as stores:
            mail = await stores.invitations.get(delivery.notification_id)
            opted_out = mail is not None and await stores.invitations.opted_out(address_hash(mail.email))
        if mail is None or opted_out or mail.expires_at <= self.context.clock.now():
            return False
        message = message_for(
            delivery, self.templates.render_invitation(mail), sender=self.context.settings.mail_from, to=mail.email
        )
        await self.context.platform.mailer.send(message)
        # A crash before this line sends it again after the lease (same Message-ID); after it, never.
        async with self.context.db.writing() as connection:
            await Stores(connection).invitations.forget(mail.invitation_id)
        return True


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
