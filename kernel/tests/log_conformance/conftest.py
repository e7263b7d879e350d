"""Fixtures for the message-log conformance suite: every test runs against each backend named in
GATHERLY_TEST_LOG_BACKENDS (comma separated, default `embedded`), e.g. `embedded,kafka`."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gatherly.kernel.log import EmbeddedLog, MessageLog

from .support import DEADLINE_S

BACKENDS = [
    name.strip() for name in os.environ.get("GATHERLY_TEST_LOG_BACKENDS", "embedded").split(",") if name.strip()
]


async def build_log(backend: str, tmp_path: Path) -> MessageLog:
    """A started log of the named backend, or a test failure saying why not (never a skip: a backend that
    was asked for and cannot run is a broken test environment, not a reason to pass)."""
    factory: Callable[[], MessageLog]
    if backend == "embedded":

        def factory() -> MessageLog:
            return EmbeddedLog(tmp_path / "log.sqlite", session_timeout=2.0, poll_interval=0.02)

    elif backend == "kafka":
        bootstrap = os.environ.get("GATHERLY_TEST_KAFKA_BOOTSTRAP", "localhost:9092")
        try:
            from gatherly.kernel.log.kafka import KafkaLog
        except ImportError as error:
            pytest.fail(f"log backend 'kafka' was requested but gatherly.kernel.log.kafka is unusable: {error!r}")

        def factory() -> MessageLog:
            return KafkaLog(bootstrap)

    else:
        pytest.fail(f"unknown log backend {backend!r} in GATHERLY_TEST_LOG_BACKENDS (known: embedded, kafka)")
    try:
        log = factory()
        await asyncio.wait_for(log.start(), DEADLINE_S)
    except Exception as error:  # whatever stops the backend from starting fails the test, loudly
        pytest.fail(f"log backend {backend!r} could not start (bootstrap/env correct?): {error!r}")
    return log


@pytest.fixture(params=BACKENDS)
async def message_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageLog]:
    log = await build_log(request.param, tmp_path)
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Makes topic and group names that cannot collide with other tests or runs on a shared Kafka."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:12]}"
