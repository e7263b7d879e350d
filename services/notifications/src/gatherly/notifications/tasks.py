"""Background work of the notifications service: the email sender and the live feed that wakes streams."""

from __future__ import annotations

from gatherly.kernel.runtime import ServiceContext
from gatherly.notifications.emails import TEMPLATES, EmailSender, EmailTemplates
from gatherly.notifications.store import SENDS_SIGNAL
from gatherly.notifications.stream import LIVE_FEED, LiveFeed


async def send_emails(context: ServiceContext) -> None:
    """Background task: deliver queued notification emails (see emails.EmailSender)."""
    templates: EmailTemplates = context.extras[TEMPLATES]
    await EmailSender(context, templates, context.extras[SENDS_SIGNAL]).run()


async def follow_notifications(context: ServiceContext) -> None:
    """Background task: follow the `notification` topic and wake this process's live streams."""
    feed: LiveFeed = context.extras[LIVE_FEED]
    await feed.run()
