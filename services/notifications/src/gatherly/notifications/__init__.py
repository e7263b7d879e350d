"""The notifications service: what it is, declared once for every way of running it."""

import secrets
from pathlib import Path

from gatherly.kernel.egress import system_resolve
from gatherly.kernel.runtime import ServiceContext, ServiceDefinition
from gatherly.kernel.uow import OutboxSignal
from gatherly.notifications import service
from gatherly.notifications.api import UNSUBSCRIBE_KEY, push_router, router
from gatherly.notifications.consumers import consumers
from gatherly.notifications.domain import Channel
from gatherly.notifications.emails import TEMPLATES, EmailTemplates
from gatherly.notifications.push import HOST_RESOLVER, VAPID, VapidKeys, new_private_key
from gatherly.notifications.store import SENDS_SIGNALS, metadata, unit_of_work
from gatherly.notifications.stream import LIVE_FEED, LiveFeed
from gatherly.notifications.tasks import (
    follow_notifications,
    prune_push_receipts,
    send_emails,
    send_invitation_emails,
    send_pushes,
    send_reminders,
    send_weekly_digests,
)


async def _start(context: ServiceContext) -> None:
    context.extras[SENDS_SIGNALS] = {channel: OutboxSignal() for channel in Channel if channel is not Channel.IN_APP}
    context.extras[LIVE_FEED] = LiveFeed(context.platform.log)
    context.extras[HOST_RESOLVER] = system_resolve
    # Made at first start and kept in the database: links in emails already sent keep working after restarts,
    # and every process of the service signs and checks them alike.
    key = await service.kept_secret(unit_of_work(context), "unsubscribe", secrets.token_hex(32))
    context.extras[UNSUBSCRIBE_KEY] = bytes.fromhex(key)
    context.extras[TEMPLATES] = EmailTemplates(context.settings.effective_public_url, bytes.fromhex(key))
    # The VAPID key pair likewise: browsers subscribed with its public key, which must not change under them.
    context.extras[VAPID] = VapidKeys(await service.kept_secret(unit_of_work(context), "vapid", new_private_key()))


SERVICE = ServiceDefinition(
    name="notifications",
    title="notifications service",
    routers=[router, push_router],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=unit_of_work,
    consumers=consumers,
    topics=["notification", "user_deletion", "user_export"],
    tasks=[
        send_reminders,
        send_emails,
        send_invitation_emails,
        send_pushes,
        follow_notifications,
        send_weekly_digests,
        prune_push_receipts,
    ],
    on_start=_start,
)
