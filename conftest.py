"""Fixtures every test suite may use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatherly.app.testing import RunningGatherly, running_gatherly


@pytest.fixture
async def gatherly(tmp_path: Path) -> AsyncIterator[RunningGatherly]:
    """All five services in-process on fresh SQLite files and an embedded log."""
    async with running_gatherly(tmp_path / "data") as running:
        yield running
