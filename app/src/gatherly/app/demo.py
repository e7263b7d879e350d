"""Demo data for `gatherly up`: people, groups and events to look at on a fresh start (loaded once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from gatherly.app.compose import Process

log = structlog.get_logger(__name__)


async def seed_demo(process: Process) -> None:
    """Loads the demo through the services' own HTTP API, so it obeys every rule real users do.
    Skipped when the data directory already holds it (a marker file)."""
    marker = process.settings.data_dir / ".demo-loaded"
    if marker.exists():
        return
    log.info("no demo data yet; nothing to load until the services that hold it exist")
