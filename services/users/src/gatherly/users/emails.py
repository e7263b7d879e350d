"""The emails the users service sends: rendered from templates (HTML + plain text), queued in the database in the
transaction of the change, and delivered by a background task that retries with backoff and never drops one."""

from __future__ import annotations

import functools
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from babel.dates import format_timedelta
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from gatherly.kernel.mail import compose
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import OutboxSignal
from gatherly.users.domain import TOKEN_LIFETIMES, TokenPurpose
from gatherly.users.store import OutgoingMail, Stores

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


class EmailTemplates:
    """Renders each email twice from one context: HTML (autoescaped) and plain text."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url
        loader = PackageLoader("gatherly.users", "templates")
        self._html = Environment(loader=loader, autoescape=select_autoescape(["html"]), undefined=StrictUndefined)
        self._text = Environment(loader=loader, autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)

    def link(self, path: str, token: str) -> str:
        return f"{self.public_url}/{path}?token={urllib.parse.quote(token, safe='')}"

    def confirmation(self, display_name: str, token: str) -> RenderedMail:
        return self._render(
            "confirm_email",
            "Confirm your email address",
            display_name=display_name,
            link=self.link("confirm", token),
            validity=validity(TokenPurpose.CONFIRM_EMAIL),
        )

    def already_registered(self, display_name: str) -> RenderedMail:
        return self._render(
            "already_registered",
            "You already have a Gatherly account",
            display_name=display_name,
            login_link=f"{self.public_url}/login",
        )

    def password_reset(self, display_name: str, token: str) -> RenderedMail:
        return self._render(
            "reset_password",
            "Reset your Gatherly password",
            display_name=display_name,
            link=self.link("reset-password", token),
            validity=validity(TokenPurpose.RESET_PASSWORD),
        )

    def email_change(self, display_name: str, token: str) -> RenderedMail:
        """To the new address: the link that makes it the account's."""
        return self._render(
            "change_email",
            "Confirm your new email address",
            display_name=display_name,
            link=self.link("confirm-email", token),
            validity=validity(TokenPurpose.CHANGE_EMAIL),
        )

    def email_change_notice(self, display_name: str, new_email: str) -> RenderedMail:
        """To the old address: a change was asked for (a stolen session should not move an account quietly)."""
        return self._render(
            "email_change_notice",
            "Your Gatherly email address is being changed",
            display_name=display_name,
            new_email=new_email,
            login_link=f"{self.public_url}/login",
        )

    def export_ready(self, display_name: str, link: str, expires_at: datetime) -> RenderedMail:
        return self._render(
            "export_ready",
            "Your Gatherly data is ready to download",
            display_name=display_name,
            link=link,
            expires=expires_at.strftime("%Y-%m-%d %H:%M"),
        )

    def _render(self, name: str, subject: str, **values: object) -> RenderedMail:
        values = {**values, "subject": subject, "public_url": self.public_url}
        return RenderedMail(
            subject=subject,
            text=self._text.get_template(f"{name}.txt").render(values),
            html=self._html.get_template(f"{name}.html").render(values),
        )


@functools.cache
def templates_at(public_url: str) -> EmailTemplates:
    """The templates for links under `public_url`, made once (for consumers: they have a unit of work, not the
    service's Identity)."""
    return EmailTemplates(public_url)


def validity(purpose: TokenPurpose) -> str:
    """How long a link works, in words with the right plural ("1 hour", "2 hours", "1 day")."""
    return format_timedelta(TOKEN_LIFETIMES[purpose], locale="en")


# --- delivery ---------------------------------------------------------------------------------------------------

BATCH = 50
# While a message is being sent, other replicas leave it alone for this long (then it is considered lost
# mid-send and tried again: at-least-once, like every other delivery in Gatherly).
CLAIM = timedelta(minutes=2)


def retry_delay(attempts: int, initial: float, longest: float) -> timedelta:
    """Doubling per failed attempt, capped: a mail server that is down for an hour is tried a few times an hour."""
    return timedelta(seconds=min(longest, initial * 2 ** min(attempts, 30)))


class MailSender:
    """Delivers due emails from the mail outbox through the platform's mailer (files or SMTP)."""

    def __init__(self, context: ServiceContext, signal: OutboxSignal) -> None:
        self.context = context
        self.signal = signal
        settings = context.settings
        self.initial_delay = settings.mail_retry_initial_delay
        self.longest_delay = settings.mail_retry_max_delay
        self.poll_interval = settings.mail_poll_interval

    async def run(self) -> None:
        """Until cancelled: send what is due, then sleep until woken by a commit, the next retry, or the poll."""
        while True:
            try:
                await self.send_due()
                wait = await self._seconds_until_next()
            except Exception:
                # The database may be briefly unavailable; the mail stays queued, so try again shortly.
                log.exception("mail delivery round failed")
                wait = self.poll_interval
            await self.signal.wait(wait)

    async def send_due(self) -> int:
        """Send every message due now; returns how many were delivered."""
        delivered = 0
        while True:
            now = self.context.clock.now()
            claimed_until = now + CLAIM
            claimed = await self._claim_due(now, claimed_until)
            if not claimed:
                return delivered
            for index, mail in enumerate(claimed):
                try:
                    delivered += await self._send(mail)
                except Exception:
                    # Recording an outcome failed (the database): the messages of the batch not yet tried are due
                    # again now, instead of waiting out the claim (2 minutes of stalled mail).
                    await self._release([m.id for m in claimed[index + 1 :]], claimed_until)
                    raise
            if len(claimed) < BATCH:
                return delivered

    async def _claim_due(self, now: datetime, claimed_until: datetime) -> list[OutgoingMail]:
        async with self.context.db.writing() as session:
            return await Stores(session).mail.claim_due(now, claimed_until, BATCH)

    async def _release(self, mail_ids: list[str], claimed_until: datetime) -> None:
        if not mail_ids:
            return
        try:
            async with self.context.db.writing() as session:
                await Stores(session).mail.release(mail_ids, claimed_until, self.context.clock.now())
        except Exception:
            # The database is still away: the claim lapses by itself and the messages are tried then.
            log.exception("could not release the claim of unsent emails", count=len(mail_ids))

    async def _send(self, mail: OutgoingMail) -> int:
        # A batch is claimed at once and sent one by one, which takes a while: a message dropped meanwhile (its
        # account was deleted) must not go out. What is left is the instant between this check and the handover.
        async with self.context.db.read_connection() as connection:
            if not await Stores(connection).mail.is_queued(mail.id):
                return 0
        try:
            message = compose(
                sender=self.context.settings.mail_from,
                to=mail.recipient,
                subject=mail.subject,
                text=mail.text,
                html=mail.html,
            )
            await self.context.platform.mailer.send(message)
        except Exception as error:
            # Whatever composing or the mailer raised (SMTP refusal, open circuit, full disk), the message is kept.
            retry_at = self.context.clock.now() + retry_delay(mail.attempts, self.initial_delay, self.longest_delay)
            log.warning(
                "email not delivered; will retry", mail_id=mail.id, attempts=mail.attempts + 1, error=repr(error)
            )
            async with self.context.db.writing() as session:
                await Stores(session).mail.failed(mail.id, repr(error), retry_at)
            return 0
        async with self.context.db.writing() as session:
            await Stores(session).mail.sent(mail.id)
        return 1

    async def _seconds_until_next(self) -> float:
        async with self.context.db.read_session() as session:
            next_due: datetime | None = await Stores(session).mail.next_due_at()
        if next_due is None:
            return self.poll_interval
        until = (next_due - self.context.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, until))
