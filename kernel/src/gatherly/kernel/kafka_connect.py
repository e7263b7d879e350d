"""A one-node Kafka Connect worker (distributed mode) with Debezium's PostgreSQL connector, from the jars
`scripts/debezium.sh` fetches, and the outbox connectors it runs (deploy/debezium/outbox-connector.json).

Used by the tests (one worker per pytest session, on the session's broker), by `gatherly debezium register` and by
`gatherly stack up`. The worker keeps its connectors' configs, offsets and statuses in topics of the broker, so a
restarted worker resumes where the last one committed (Debezium is at-least-once: the consumers' inbox absorbs the
records it sends again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from gatherly.kernel.testing import free_port, stop_process

STARTUP_S = 180.0  # a cold JVM on a busy two-core machine takes tens of seconds to join its group
STOP_S = 30.0
PUBLICATION = "gatherly_outbox"
CONNECTOR_TEMPLATE = Path(__file__).resolve().parents[4] / "deploy" / "debezium" / "outbox-connector.json"


class ConnectMissing(RuntimeError):
    """The Kafka Connect or Debezium jars are not installed: run `bash scripts/debezium.sh`."""


class ConnectorFailed(RuntimeError):
    """A connector or its task did not reach RUNNING (the worker's status says why)."""


def _newest_complete(pattern: str) -> Path | None:
    """The directory of the newest `complete` marker matching `pattern` under ~/.cache/gatherly (scripts/debezium.sh
    writes the marker once a copy is whole)."""
    markers = sorted((Path.home() / ".cache" / "gatherly").glob(pattern))
    return markers[-1].parent if markers else None


def connect_libs() -> Path:
    """The Connect worker's jars: GATHERLY_KAFKA_CONNECT_LIBS, else the newest complete copy of scripts/debezium.sh."""
    configured = os.environ.get("GATHERLY_KAFKA_CONNECT_LIBS")
    libs = Path(configured) if configured else _newest_complete("kafka-connect-*/libs/complete")
    if libs is None or not any(libs.glob("connect-runtime-*.jar")):
        raise ConnectMissing(f"no Kafka Connect jars in {libs}: run `bash scripts/debezium.sh` (CI does)")
    return libs


def debezium_plugins() -> Path:
    """Connect's plugin.path holding Debezium's PostgreSQL connector: GATHERLY_DEBEZIUM_PLUGINS, else the newest
    complete copy of scripts/debezium.sh."""
    configured = os.environ.get("GATHERLY_DEBEZIUM_PLUGINS")
    connector = _newest_complete("debezium-*/plugins/debezium-connector-postgres/complete")
    plugins = Path(configured) if configured else (connector.parent if connector else None)
    if plugins is None or not any(plugins.glob("*/debezium-connector-postgres-*.jar")):
        raise ConnectMissing(f"no Debezium connector in {plugins}: run `bash scripts/debezium.sh` (CI does)")
    return plugins


def worker_properties(bootstrap: str, rest_port: int, plugins: Path, group: str) -> str:
    """A distributed worker's config. Its three internal topics live on the broker (one replica: one broker).
    Keys, values and headers are plain strings, as the gatherly consumers read them (the same converters as the
    Strimzi KafkaConnect in deploy/k8s). Offsets are flushed every second, so a worker that dies sends again at
    most about a second of records."""
    return "\n".join(
        [
            f"bootstrap.servers={bootstrap}",
            f"group.id={group}",
            f"config.storage.topic={group}-configs",
            f"offset.storage.topic={group}-offsets",
            f"status.storage.topic={group}-status",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.storage.partitions=5",
            "status.storage.partitions=1",
            "offset.flush.interval.ms=1000",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.storage.StringConverter",
            "header.converter=org.apache.kafka.connect.storage.StringConverter",
            f"listeners=http://127.0.0.1:{rest_port}",
            "rest.advertised.host.name=127.0.0.1",
            f"rest.advertised.port={rest_port}",
            f"plugin.path={plugins}",
            # A worker that leaves rejoins at once (the default waits 5 minutes for it before moving its tasks).
            "scheduled.rebalance.max.delay.ms=0",
            "",
        ]
    )


def _java(libs: Path, *args: str) -> list[str]:
    # A small heap and the client compiler only, as for the test broker: the load is light, the machine shared.
    return ["java", "-Xms128m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", *args]


class ConnectWorker:
    """A Connect worker process with its data in `folder`; `start`, `stop` (or `kill`) and start again on the same
    port and group, as a restarted worker would."""

    def __init__(self, folder: Path, bootstrap: str, group: str = "gatherly-debezium") -> None:
        self.folder = folder
        self.bootstrap = bootstrap
        self.group = group
        self.libs = connect_libs()
        self.plugins = debezium_plugins()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "connect.log"

    def start(self) -> None:
        """Start the worker and return once its REST API answers (it has joined its group)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "worker.properties"
        for attempt in range(3):
            config.write_text(worker_properties(self.bootstrap, self.port, self.plugins, self.group))
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    _java(self.libs, "org.apache.kafka.connect.cli.ConnectDistributed", str(config)),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                self._wait_until_ready()
                return
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise
                self.port = free_port()
            except BaseException:
                self.stop()
                raise

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log_path.read_text(errors="replace")
                failure = _PortTaken if "Address already in use" in output else RuntimeError
                raise failure(f"Kafka Connect exited at start ({self.process.returncode}): {output[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                # /connectors answers only once the worker has read its config topic and joined the group.
                if httpx.get(f"{self.url}/connectors", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"Kafka Connect did not answer on {self.url} within {STARTUP_S:g}s")

    def stop(self) -> None:
        """Stop gracefully (the worker commits its offsets and leaves the group)."""
        if self.process is not None:
            stop_process(self.process, STOP_S)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no offset commit, no goodbye, as a crashed machine."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class _PortTaken(RuntimeError):
    pass


@contextlib.contextmanager
def running_connect(folder: Path, bootstrap: str, group: str = "gatherly-debezium") -> Iterator[ConnectWorker]:
    """A started worker on the broker at `bootstrap`; stopped at the end. Raises `ConnectMissing` without jars."""
    worker = ConnectWorker(folder, bootstrap, group)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


# --- outbox connectors ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxConnector:
    """One service database's outbox connector: its name in Connect, its config and its replication slot."""

    name: str
    config: dict[str, str]

    @property
    def slot(self) -> str:
        return self.config["slot.name"]

    @property
    def database(self) -> str:
        return self.config["database.dbname"]


def outbox_connector(service: str, database_url: str, template: Path = CONNECTOR_TEMPLATE) -> OutboxConnector:
    """The connector of `service`'s PostgreSQL database, from the template (its {{placeholders}} filled in;
    Debezium's own ${...} expressions are left as they are)."""
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        raise ValueError(f"Debezium reads PostgreSQL only; the {service} database is {url.drivername}")
    values = {
        "service": service,
        "database": url.database or "",
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "user": url.username or "",
        "password": url.password or "",
    }
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: json.dumps(values[m[1]])[1:-1], template.read_text())
    document = json.loads(text)
    return OutboxConnector(name=document["name"], config=document["config"])


async def ensure_publication(database_url: str) -> None:
    """Publish the outbox table to logical decoding (the connector's publication; made once, as the CloudNativePG
    Publication does in deploy/k8s). The table must exist: migrate first."""
    url = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_publication WHERE pubname = $1", PUBLICATION):
            await connection.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE outbox")
    finally:
        await connection.close()


class ConnectClient:
    """Kafka Connect's REST API, for what Gatherly does with it: put, inspect and delete connectors."""

    def __init__(self, url: str, timeout: float = STARTUP_S) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=30.0)
        self.timeout = timeout

    async def __aenter__(self) -> ConnectClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def put(self, connector: OutboxConnector) -> None:
        """Create or update the connector (idempotent) and wait until it and its task run."""
        await self._retrying("PUT", f"/connectors/{connector.name}/config", json=connector.config)
        await self.wait_running(connector.name)

    async def delete(self, name: str) -> None:
        """Remove the connector (its replication slot stays: `drop_slot`)."""
        await self._retrying("DELETE", f"/connectors/{name}", missing_ok=True)

    async def status(self, name: str) -> dict[str, Any]:
        response = await self.http.get(f"/connectors/{name}/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def wait_running(self, name: str) -> None:
        deadline = time.monotonic() + self.timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                status = await self.status(name)
                states = [status["connector"]["state"], *(task["state"] for task in status["tasks"])]
                if "FAILED" in states:
                    raise ConnectorFailed(f"{name}: {json.dumps(status)[:3000]}")
                if status["tasks"] and all(state == "RUNNING" for state in states):
                    return
            await asyncio.sleep(0.3)
        raise ConnectorFailed(f"{name} not running after {self.timeout:g}s: {json.dumps(status)[:3000]}")

    async def _retrying(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> None:
        # While the worker rebalances (just started, a member joined or left) it answers 409 or 5xx: try again.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            else:
                if response.status_code < 300 or (missing_ok and response.status_code == 404):
                    return
                if (response.status_code != 409 and response.status_code < 500) or time.monotonic() > deadline:
                    raise ConnectorFailed(f"{method} {path}: {response.status_code} {response.text[:2000]}")
            await asyncio.sleep(0.5)


async def wait_for_slot(database_url: str, slot: str, timeout: float = STARTUP_S) -> None:
    """Wait until the connector's replication slot exists and is read: from then on, every committed outbox row
    reaches Kafka (with snapshot.mode=no_data, rows committed before the slot existed are not sent)."""
    url = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        deadline = time.monotonic() + timeout
        while not await connection.fetchval("SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot):
            if time.monotonic() > deadline:
                raise ConnectorFailed(f"replication slot {slot} not in use after {timeout:g}s")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def connect_outbox(connect: ConnectClient, service: str, database_url: str) -> OutboxConnector:
    """Publish `service`'s outbox table, put its connector and wait until it streams: from then on every event
    the service commits reaches Kafka (the service may run with its polling relay off). Safe to run again."""
    connector = outbox_connector(service, database_url)
    await ensure_publication(database_url)
    await connect.put(connector)
    await wait_for_slot(database_url, connector.slot)
    return connector


async def drop_slot(database_url: str, slot: str, timeout: float = 60.0) -> None:
    """Drop a deleted connector's replication slot (it would keep WAL forever, and blocks dropping the database),
    once its task has let go of it."""
    url = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        deadline = time.monotonic() + timeout
        while True:
            active = await connection.fetchval("SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot)
            if active is None:
                return
            if not active:
                await connection.execute("SELECT pg_drop_replication_slot($1)", slot)
                return
            if time.monotonic() > deadline:
                raise ConnectorFailed(f"replication slot {slot} still in use after {timeout:g}s")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


__all__ = [
    "ConnectClient",
    "ConnectMissing",
    "ConnectWorker",
    "ConnectorFailed",
    "OutboxConnector",
    "connect_outbox",
    "drop_slot",
    "ensure_publication",
    "outbox_connector",
    "running_connect",
    "wait_for_slot",
]
