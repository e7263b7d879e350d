"""The process keeps parsed records for its consumer groups only where its log hands them the same record objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatherly.app.compose import build_platform
from gatherly.kernel.settings import LogBackend, Settings


@pytest.mark.parametrize(("backend", "keeps"), [(LogBackend.EMBEDDED, True), (LogBackend.KAFKA, False)])
async def test_parsed_records_are_kept_only_on_the_embedded_log(
    tmp_path: Path, backend: LogBackend, keeps: bool
) -> None:
    platform = build_platform(Settings(data_dir=tmp_path, log_backend=backend))
    try:
        assert bool(platform.parsed_records.capacity) is keeps
    finally:
        await platform.http.aclose()
