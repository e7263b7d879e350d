"""Background tasks of the users service: loops the host starts next to the API and the consumers."""

from __future__ import annotations

import asyncio

import structlog

from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import OutboxSignal
from gatherly.users.emails import MailSender
from gatherly.users.service import fail_overdue_deletions, fail_overdue_exports, forget_expired
from gatherly.users.store import unit_of_work

log = structlog.get_logger(__name__)

HOUSEKEEPING_INTERVAL_SECONDS = 3600.0
DELETION_CHECK_INTERVAL_SECONDS = 60.0
EXPORT_CHECK_INTERVAL_SECONDS = 60.0


async def deliver_mail(context: ServiceContext) -> None:
    """Background task of the users service (see ServiceDefinition.tasks)."""
    signal: OutboxSignal = context.extras["mail_signal"]
    await MailSender(context, signal).run()


async def keep_tidy(context: ServiceContext) -> None:
    """Background task: `forget_expired` once an hour."""
    while True:
        try:
            deleted = await forget_expired(unit_of_work(context))
            if deleted:
                log.info("expired tokens and throttles deleted", rows=deleted)
        except Exception:
            log.exception("housekeeping failed; will try again")  # a missed round only delays the cleanup
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_SECONDS)


async def watch_deletions(context: ServiceContext) -> None:
    """Background task: account deletions past their deadline fail, checked once a minute. An error ends the task:
    the host's supervisor logs it and restarts it with backoff (a missed round only delays a failure)."""
    while True:
        await fail_overdue_deletions(unit_of_work(context))
        await asyncio.sleep(DELETION_CHECK_INTERVAL_SECONDS)


async def watch_exports(context: ServiceContext) -> None:
    """Background task: data exports past their deadline are failed, checked once a minute (a person waiting for
    their data learns soon). An error ends the task: the host's supervisor logs it and restarts it with backoff."""
    while True:
        await fail_overdue_exports(unit_of_work(context))
        await asyncio.sleep(EXPORT_CHECK_INTERVAL_SECONDS)
