"""Background tasks of the groups service: loops the host starts next to the API and the consumers."""

from __future__ import annotations

import asyncio

import structlog

from gatherly.groups.service import fail_overdue_deletions
from gatherly.groups.store import unit_of_work
from gatherly.kernel.runtime import ServiceContext

log = structlog.get_logger(__name__)

DELETION_CHECK_INTERVAL_SECONDS = 60.0


async def watch_deletions(context: ServiceContext) -> None:
    """Background task: the group-deletion sagas' timeouts, checked once a minute. An error ends the task: the
    host's supervisor logs it and restarts the task with backoff (a missed round only delays a timeout)."""
    while True:
        for deletion in await fail_overdue_deletions(unit_of_work(context)):
            log.error("group deletion saga timed out", group_id=deletion.group_id, reason=deletion.reason)
        await asyncio.sleep(DELETION_CHECK_INTERVAL_SECONDS)
