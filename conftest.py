"""Fixtures every test suite may use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gatherly.app.testing import RunningGatherly, running_gatherly
from gatherly.kernel.kafka_broker import running_kafka
from gatherly.kernel.kafka_connect import ConnectWorker, running_connect


@pytest.fixture
async def gatherly(tmp_path: Path) -> AsyncIterator[RunningGatherly]:
    """All five services in-process on fresh SQLite files and an embedded log."""
    async with running_gatherly(tmp_path / "data") as running:
        yield running


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Kafka broker for the whole session, from the jars scripts/kafka.sh fetches (tests use unique topic and
    group names, so they share it); its bootstrap address."""
    try:
        with running_kafka(tmp_path_factory.mktemp("kafka")) as bootstrap:
            yield bootstrap
    except Exception as error:  # missing jars, a broker that would not start: fail loudly, never skip
        pytest.fail(f"kafka was asked for (GATHERLY_TEST_LOG_BACKENDS) but no broker could be started: {error}")


@pytest.fixture(scope="session")
def kafka_connect(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectWorker]:
    """One Kafka Connect worker with Debezium's PostgreSQL connector for the whole session, on the session's broker
    (tests register connectors of their own, on databases of their own)."""
    try:
        with running_connect(tmp_path_factory.mktemp("connect"), kafka_bootstrap) as worker:
            yield worker
    except Exception as error:  # missing jars, a worker that would not start: fail loudly, never skip
        pytest.fail(f"Debezium tests need Kafka Connect (scripts/debezium.sh) but it could not be started: {error}")
