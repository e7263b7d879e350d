"""Background tasks of the images service: processing completed uploads, and keeping storage tidy (expired slots,
objects no longer needed). The host supervises both: an error is logged and the task restarted with backoff."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from gatherly.images import service
from gatherly.images.service import GARBAGE_LISTED, UPLOADS_COMPLETED, storage_of, wake_tidying
from gatherly.images.storage import StorageUnavailable
from gatherly.images.store import unit_of_work
from gatherly.kernel.runtime import ServiceContext

log = structlog.get_logger(__name__)

# complete wakes the processing task at once in this process; uploads completed through another process of the
# service are found by this poll.
PROCESSING_POLL_SECONDS = 1.0
TIDY_INTERVAL_SECONDS = 5.0
# How often the archive task looks for exports whose last part came in (the consumer that records it cannot
# wake the task: it has no context; a second is nothing next to the minutes a person expects to wait).
ARCHIVE_POLL_SECONDS = 1.0


async def process_uploads(context: ServiceContext) -> None:
    """Background task: process completed uploads one at a time (one decoded picture in memory per process).
    When storage fails, the image waits out a backoff of its own (service.process_next) and is tried again."""
    wake: asyncio.Event = context.extras[UPLOADS_COMPLETED]
    urls = service.UrlPolicy.of(context.settings)
    while True:
        wake.clear()
        try:
            while image := await service.process_next(unit_of_work(context), storage_of(context), urls=urls):
                log.info("image processed", image_id=image.id, status=image.status.value, reason=image.reason)
                wake_tidying(context)  # the original upload is garbage now
        except StorageUnavailable as error:
            log.warning("storage unavailable; the image will be processed later", error=repr(error))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), PROCESSING_POLL_SECONDS)


async def keep_storage_tidy(context: ServiceContext) -> None:
    """Background task: reject upload slots that expired without complete, and delete objects nobody needs (at
    once when this process listed them, otherwise at the next round)."""
    wake: asyncio.Event = context.extras[GARBAGE_LISTED]
    while True:
        wake.clear()
        expired = await service.expire_uploads(unit_of_work(context))
        await service.sweep_originals(unit_of_work(context))
        try:
            keep_collecting = timedelta(seconds=2 * context.settings.export_deadline_seconds)
            archives = await service.expire_exports(
                unit_of_work(context), storage_of(context), keep_collecting=keep_collecting
            )
            if archives:
                log.info("expired export archives deleted", archives=archives)
            collected = await service.collect_garbage(unit_of_work(context), storage_of(context))
            deleted = collected.deleted
            if collected.refused:
                log.warning("storage refused to delete objects; tried again later", refused=collected.refused)
        except StorageUnavailable as error:  # the keys stay listed: deleted at a later round
            log.warning("storage unavailable; objects will be deleted later", error=repr(error))
            deleted = 0
        if expired or deleted:
            log.info("storage tidied", expired_uploads=expired, deleted_objects=deleted)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), TIDY_INTERVAL_SECONDS)


async def write_export_archives(context: ServiceContext) -> None:
    """Background task: write the archive of each data export whose parts are all in (one at a time: an archive
    is built in memory). When storage fails, the export's claim runs out and it is tried again."""
    while True:
        try:
            while export_id := await service.write_next_archive(
                unit_of_work(context), storage_of(context), link_ttl=context.settings.export_link_ttl_seconds
            ):
                log.info("export archive written", export_id=export_id)
        except StorageUnavailable as error:
            log.warning("storage unavailable; the export archive will be written later", error=repr(error))
        await asyncio.sleep(ARCHIVE_POLL_SECONDS)
