"""Shared kernel fixtures. `message_log` runs a test against each backend named in GATHERLY_TEST_LOG_BACKENDS
(comma separated: `embedded` (the default) and `kafka`, which starts one broker for the whole session from the jars
scripts/kafka.sh fetches); `database_url` against each database backend
named in GATHERLY_TEST_DB_BACKENDS (see gatherly.kernel.testing). The log conformance suite and the delivery tests
(outbox, relay, inbox, retries, dead letters) are the same tests for every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatherly.kernel.log import EmbeddedLog, MessageLog
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.testing import DB_BACKENDS, LOG_BACKENDS, BackendUnavailable, scratch_database

# Generous, because a Kafka group takes seconds to rebalance; the embedded log starts in milliseconds.
DEADLINE_S = 30.0


def kafka_log(bootstrap: str) -> KafkaLog:
    # A short session timeout (the test broker allows 1 s) so a silent member loses its partitions quickly.
    return KafkaLog(bootstrap, session_timeout=3.0, request_timeout=DEADLINE_S)


async def build_log(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> MessageLog:
    """A started log of the named backend, or a test failure saying why not (never a skip: a backend that
    was asked for and cannot run is a broken test environment, not a reason to pass)."""
    log: MessageLog
    if backend == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
    try:
        if backend == "embedded":
            log = EmbeddedLog(tmp_path / "log.sqlite", session_timeout=2.0, poll_interval=0.02)
        elif backend == "kafka":
            log = kafka_log(bootstrap)
        else:
            pytest.fail(f"unknown log backend {backend!r} in GATHERLY_TEST_LOG_BACKENDS (built: embedded, kafka)")
        await asyncio.wait_for(log.start(), DEADLINE_S)
    except Exception as error:  # a refused connection, a timeout: all fail the test loudly
        pytest.fail(f"log backend {backend!r} could not be built and started: {error!r}")
    return log


@pytest.fixture(params=LOG_BACKENDS)
async def message_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageLog]:
    log = await build_log(request.param, tmp_path, request)
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
