"""Shared kernel fixtures. `message_log` runs a test against each backend named in GATHERLY_TEST_LOG_BACKENDS
(comma separated, default `embedded`: the only backend built so far); `database_url` against each database backend
named in GATHERLY_TEST_DB_BACKENDS (see gatherly.kernel.testing). The log conformance suite and the delivery tests
(outbox, relay, inbox, retries, dead letters) are the same tests for every backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatherly.kernel.log import EmbeddedLog, MessageLog
from gatherly.kernel.testing import DB_BACKENDS, BackendUnavailable, scratch_database

# Generous, because a Kafka group takes seconds to rebalance; the embedded log starts in milliseconds.
DEADLINE_S = 30.0

BACKENDS = [
    name.strip() for name in os.environ.get("GATHERLY_TEST_LOG_BACKENDS", "embedded").split(",") if name.strip()
]


async def build_log(backend: str, tmp_path: Path) -> MessageLog:
    """A started log of the named backend, or a test failure saying why not (never a skip: a backend that
    was asked for and cannot run is a broken test environment, not a reason to pass)."""
    log: MessageLog
    try:
        if backend == "embedded":
            log = EmbeddedLog(tmp_path / "log.sqlite", session_timeout=2.0, poll_interval=0.02)
        else:
            pytest.fail(f"unknown log backend {backend!r} in GATHERLY_TEST_LOG_BACKENDS (built so far: embedded)")
        await asyncio.wait_for(log.start(), DEADLINE_S)
    except Exception as error:  # a refused connection, a timeout: all fail the test loudly
        pytest.fail(f"log backend {backend!r} could not be built and started: {error!r}")
    return log


@pytest.fixture(params=BACKENDS)
async def message_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageLog]:
    log = await build_log(request.param, tmp_path)
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture(params=DB_BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of each backend in GATHERLY_TEST_DB_BACKENDS, dropped after the test."""
    try:
        async with scratch_database(request.param, tmp_path) as url:
            yield url
    except BackendUnavailable as error:
        pytest.fail(str(error))
