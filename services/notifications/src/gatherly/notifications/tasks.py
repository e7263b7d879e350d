"""Background work of the notifications service: reminders when due, the senders (emails, invitation emails to
addresses, pushes), the live feed that wakes streams, and pruning old push receipts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gatherly.kernel.runtime import ServiceContext
from gatherly.notifications import service
from gatherly.notifications.domain import Channel
from gatherly.notifications.emails import TEMPLATES, EmailChannel, EmailTemplates, InvitationMailChannel
from gatherly.notifications.push import VAPID, PushChannel, VapidKeys
from gatherly.notifications.sending import Sender
from gatherly.notifications.store import SENDS_SIGNALS, unit_of_work
from gatherly.notifications.stream import LIVE_FEED, LiveFeed


async def send_emails(context: ServiceContext) -> None:
    """Background task: deliver queued notification emails (sending.Sender with emails.EmailChannel)."""
    templates: EmailTemplates = context.extras[TEMPLATES]
    channel = EmailChannel(context, templates)
    await Sender(context, Channel.EMAIL, channel, context.extras[SENDS_SIGNALS][Channel.EMAIL]).run()


async def send_invitation_emails(context: ServiceContext) -> None:
    """Background task: deliver invitations to addresses with no account (sending.Sender with
    emails.InvitationMailChannel)."""
    templates: EmailTemplates = context.extras[TEMPLATES]
    channel = InvitationMailChannel(context, templates)
    signal = context.extras[SENDS_SIGNALS][Channel.INVITATION_EMAIL]
    await Sender(context, Channel.INVITATION_EMAIL, channel, signal).run()


async def send_pushes(context: ServiceContext) -> None:
    """Background task: deliver queued web pushes (sending.Sender with push.PushChannel)."""
    keys: VapidKeys = context.extras[VAPID]
    channel = PushChannel(context, keys)
    await Sender(context, Channel.PUSH, channel, context.extras[SENDS_SIGNALS][Channel.PUSH]).run()


async def follow_notifications(context: ServiceContext) -> None:
    """Background task: follow the `notification` topic and wake this process's live streams."""
    feed: LiveFeed = context.extras[LIVE_FEED]
    await feed.run()


REMINDER_BATCH = 100


async def send_reminders(context: ServiceContext) -> None:
    """Background task: send reminders as they come due. It looks at least every notification poll interval
    (1 s by default), so a reminder goes out within that of its due time, even when another process scheduled it.
    A failing round raises: the host's supervisor logs it and restarts the loop with backoff."""
    poll = context.settings.notification_poll_interval
    while True:
        sent = await service.send_due_reminders(unit_of_work(context), REMINDER_BATCH)
        if sent == REMINDER_BATCH:
            continue
        next_due = await service.next_reminder_at(context.db)
        wait = poll if next_due is None else (next_due - context.clock.now()).total_seconds()
        await asyncio.sleep(min(poll, max(0.0, wait)))


# Looked at hourly: each person gets the week's digest at the first round of the week that has something for them.
DIGEST_INTERVAL_SECONDS = 3600.0
DIGEST_FLAG = "weekly-digest"


async def digest_round(context: ServiceContext) -> int:
    """One round of the weekly digest, when its feature flag is on (it is by default)."""
    if not await context.platform.flags.enabled(DIGEST_FLAG, default=True):
        return 0
    return await service.send_weekly_digests(lambda: unit_of_work(context))


async def send_weekly_digests(context: ServiceContext) -> None:
    """Background task: `digest_round` at start and then hourly."""
    while True:
        await digest_round(context)
        await asyncio.sleep(DIGEST_INTERVAL_SECONDS)


# Receipts are pruned at start and then hourly, a small batch per transaction.
PRUNE_INTERVAL_SECONDS = 3600.0
PRUNE_BATCH = 500


async def prune_push_receipts(context: ServiceContext) -> None:
    """Background task: delete push receipts older than `notification_push_receipt_retention_days` whose send is
    finished (one row per push per browser: without this the table only grows)."""
    older_than = timedelta(days=context.settings.notification_push_receipt_retention_days)
    while True:
        pruned = await service.prune_push_receipts(unit_of_work(context), older_than, PRUNE_BATCH)
        # A full batch: there is more, pruned after other writers had their turn; else wait for the next round.
        await asyncio.sleep(0 if pruned == PRUNE_BATCH else PRUNE_INTERVAL_SECONDS)
