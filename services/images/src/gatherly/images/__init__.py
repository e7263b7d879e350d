"""The images service: what it is, declared once for every way of running it."""

import asyncio
from pathlib import Path

from gatherly.images.api import media, router
from gatherly.images.consumers import consumers
from gatherly.images.service import GARBAGE_LISTED, STORAGE, UPLOADS_COMPLETED
from gatherly.images.storage import build_storage
from gatherly.images.store import unit_of_work
from gatherly.images.tables import metadata
from gatherly.images.tasks import keep_storage_tidy, process_uploads, write_export_archives
from gatherly.kernel.runtime import ServiceContext, ServiceDefinition


async def _start(context: ServiceContext) -> None:
    platform = context.platform
    storage = await build_storage(context.settings, platform.resilience, lambda: platform.clock.now())
    context.extras[STORAGE] = storage
    context.extras[UPLOADS_COMPLETED] = asyncio.Event()
    context.extras[GARBAGE_LISTED] = asyncio.Event()
    context.readiness.checks.append(storage.check)


SERVICE = ServiceDefinition(
    name="images",
    title="images service",
    routers=[router, media],
    metadata=metadata,
    migrations=Path(__file__).parent / "migrations",
    unit_of_work=unit_of_work,
    consumers=consumers,
    topics=["image", "user_deletion", "user_export"],
    tasks=[process_uploads, keep_storage_tidy, write_export_archives],
    on_start=_start,
)
