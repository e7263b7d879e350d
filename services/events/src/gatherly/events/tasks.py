"""Background work of the events service: recurring series topped up to their horizon as time passes."""

from __future__ import annotations

import asyncio

import structlog

from gatherly.events import service
from gatherly.events.store import unit_of_work
from gatherly.kernel.runtime import ServiceContext

log = structlog.get_logger(__name__)

# Occurrences are made six months ahead, so a round an hour keeps every series far ahead of its next date.
TOP_UP_INTERVAL_SECONDS = 3600.0


async def top_up_series(context: ServiceContext) -> None:
    """Background task: `service.top_up_series` at start and then once an hour."""
    while True:
        try:
            made = await service.top_up_series(unit_of_work(context))
            if made:
                log.info("recurring series topped up", occurrences=made)
        except Exception:
            log.exception("topping up recurring series failed; will try again")  # a missed round only delays it
        await asyncio.sleep(TOP_UP_INTERVAL_SECONDS)
