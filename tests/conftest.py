"""Fixtures of the cross-service API tests: one whole Gatherly per module and database backend, with cheap password
hashes and no per-address limits (these tests sign many people up from one address)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from gatherly.app.testing import RunningGatherly, running_gatherly
from gatherly.kernel.testing import DB_BACKENDS

FAST: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 8,
    "password_parallelism": 1,
    "mail_retry_initial_delay": 0.05,
    "mail_retry_max_delay": 0.2,
    "mail_poll_interval": 0.2,
    "signup_limit_per_minute": 0,
    "login_limit_per_minute": 0,
    "password_reset_limit_per_minute": 0,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def gatherly(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGatherly]:
    async with running_gatherly(
        tmp_path_factory.mktemp("api") / "data", database_backend=request.param, **FAST
    ) as running:
        yield running
