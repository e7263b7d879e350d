"""A whole Gatherly in the test process: the chosen services behind the gateway, an HTTP client, and `settle()`
to wait until every event has travelled (outboxes empty, every consumer group caught up)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from gatherly.app.compose import Process
from gatherly.app.devmail import messages_to, newest_link_token
from gatherly.app.server import server_config
from gatherly.app.services import ALL
from gatherly.contracts.base import IntegrationEvent
from gatherly.kernel.db import Database
from gatherly.kernel.log.base import TopicPartition
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.messages import Envelope
from gatherly.kernel.settings import Settings
from gatherly.kernel.testing import scratch_databases
from gatherly.kernel.uow import OUTBOX

BASE_URL = "http://localhost:8000"


# --- Gatherly in processes of its own (crash, restart and multi-process tests) ----------------------------------


def start_gatherly(env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    """`python -m gatherly.app <command…>` (e.g. "up", "--no-demo", "--port", "8123") with `env`, output dropped."""
    return subprocess.Popen(
        [sys.executable, "-m", "gatherly.app", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def until_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Wait until the process behind `client` answers /readyz with 200; fail at once if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"gatherly exited with {process.returncode}"
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"gatherly not ready in {timeout} s"
        await asyncio.sleep(0.2)


class RunningGatherly:
    def __init__(self, process: Process, client: httpx.AsyncClient) -> None:
        self.process = process
        self.client = client
        self.settings = process.settings

    @property
    def mail_dir(self) -> Path:
        return self.settings.mail_dir

    @property
    def public_url(self) -> str:
        return self.settings.effective_public_url

    async def pending(self) -> int:
        """Events not yet applied everywhere: outbox rows plus consumer lag over all groups."""
        total = 0
        log = self.process.platform.log
        for host in self.process.hosts:
            async with host.context.db.read_session() as session:
                total += int(await session.scalar(select(func.count()).select_from(OUTBOX)) or 0)
            for worker in host.workers:
                for topic in worker.spec.topics:
                    for partition, end in (await log.end_offsets(topic)).items():
                        committed = await log.committed(worker.spec.group, TopicPartition(topic, partition.partition))
                        total += end - (committed or 0)
        return total

    async def settle(self, timeout: float = 60.0) -> None:
        """Wait until everything published so far has been relayed and handled by every consumer (returning as soon
        as it has: the timeout is for a loaded CI machine, load average 40, where a cascade can take tens of s)."""
        deadline = time.monotonic() + timeout
        while (left := await self.pending()) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} event(s) still in flight after {timeout}s")
            await asyncio.sleep(0.02)


class StackGatherly(RunningGatherly):
    """A detached `gatherly stack up` (with a Kafka of its own) seen as the API tests see an in-process Gatherly: an
    HTTP client on its gateway, its mail folder (the SMTP sink's), and `settle()`. Nothing of its processes' insides
    is reachable, so tests that need them are marked `in_process_only`."""

    def __init__(self, client: httpx.AsyncClient, url: str, data_dir: Path, database_url: str, bootstrap: str) -> None:
        self.client = client
        self.url = url
        self.data_dir = data_dir
        self.database_url = database_url
        self.bootstrap = bootstrap

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def public_url(self) -> str:
        return self.url

    @asynccontextmanager
    async def _connections(self) -> AsyncIterator[tuple[KafkaLog, list[Database]]]:
        databases = [Database(self.database_url.replace("{service}", name)) for name in ALL]
        try:
            async with KafkaLog(self.bootstrap) as log:
                yield log, databases
        finally:
            for db in databases:
                await db.dispose()

    @staticmethod
    async def _pending(log: KafkaLog, databases: list[Database]) -> int:
        """Debezium publishes the outboxes, whose rows stay (the services' cleaners delete them after 10 minutes,
        long after publishing): a row is in flight while its topic holds fewer records than the outboxes hold rows
        for it. Then every consumer group's lag."""
        rows: dict[str, int] = {}
        for db in databases:
            async with db.read_connection() as connection:
                counted = select(OUTBOX.c.aggregatetype, func.count()).group_by(OUTBOX.c.aggregatetype)
                for topic, count in (await connection.execute(counted)).all():
                    rows[topic] = rows.get(topic, 0) + count
        total = 0
        for topic, count in rows.items():
            total += max(0, count - sum((await log.end_offsets(topic)).values()))
        for definition in ALL.values():
            for group, spec in definition.consumers.specs.items():
                for topic in spec.topics:
                    for partition, end in (await log.end_offsets(topic)).items():
                        committed = await log.committed(group, TopicPartition(topic, partition.partition))
                        total += end - (committed or 0)
        return total

    async def pending(self) -> int:
        async with self._connections() as (log, databases):
            return await self._pending(log, databases)

    async def settle(self, timeout: float = 10.0) -> None:
        timeout = max(timeout, 60.0)  # through Debezium and Kafka, between processes: slower than in one process
        deadline = time.monotonic() + timeout
        async with self._connections() as (log, databases):
            while (left := await self._pending(log, databases)) > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{left} event(s) still in flight after {timeout}s")
                await asyncio.sleep(0.05)


def test_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "relay_poll_interval": 0.05,
        "consumer_retry_initial_delay": 0.01,
        "consumer_retry_max_delay": 0.05,
        "consumer_max_attempts": 3,
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_gatherly(
    data_dir: Path,
    services: Sequence[str] | None = None,
    *,
    demo: bool = False,
    database_backend: str = "sqlite",
    startup_timeout: float = 60,
    **overrides: Any,
) -> AsyncIterator[RunningGatherly]:
    """The services (all five by default) with their databases on `database_backend` (`sqlite` files in
    `data_dir`, or scratch `postgresql` databases: see gatherly.kernel.testing), unless `database_url` is given.
    `startup_timeout`: seconds the services may take to start (and to stop)."""
    async with AsyncExitStack() as stack:
        process = await _process(stack, data_dir, services, demo, database_backend, overrides)
        transport = httpx.ASGITransport(app=process)
        async with (
            LifespanManager(process, startup_timeout=startup_timeout, shutdown_timeout=startup_timeout),
            httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client,
        ):
            yield RunningGatherly(process, client)


@asynccontextmanager
async def served_gatherly(
    data_dir: Path,
    port: int,
    *,
    database_backend: str = "sqlite",
    startup_timeout: float = 60,
    **overrides: Any,
) -> AsyncIterator[RunningGatherly]:
    """As `running_gatherly` (every service), served as `gatherly up` serves it (`server.server_config`: uvicorn with
    the bounded request head) on 127.0.0.1:`port` and reached over TCP, so that what the wire does to a request (the
    HTTP parser, percent-escapes in the path, the head's bounds) is in its way."""
    async with AsyncExitStack() as stack:
        overrides = {"port": port, **overrides}  # its links and token issuer name the port it is served on
        process = await _process(stack, data_dir, None, False, database_backend, overrides)
        server = uvicorn.Server(server_config(process, "127.0.0.1", port))
        serving = asyncio.create_task(_serve(server))
        try:
            deadline = time.monotonic() + startup_timeout
            while not server.started:
                if serving.done():  # it stopped, saying why (a port taken since it was chosen)
                    raise RuntimeError(f"the server on port {port} did not start") from serving.exception()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server on port {port} did not start")
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield RunningGatherly(process, client)
        finally:
            server.should_exit = True
            if not serving.done() or server.started:  # else its end is the cause of the error above
                await asyncio.wait_for(serving, startup_timeout)


async def _serve(server: uvicorn.Server) -> None:
    """`server.serve()`, whose sys.exit (uvicorn's answer to a port it cannot bind, or another failed startup) is a
    RuntimeError: a SystemExit would leave the event loop rather than the test."""
    try:
        await server.serve()
    except SystemExit as exit:
        raise RuntimeError(f"uvicorn exited with status {exit.code}") from exit


async def _process(
    stack: AsyncExitStack,
    data_dir: Path,
    services: Sequence[str] | None,
    demo: bool,
    database_backend: str,
    overrides: dict[str, Any],
) -> Process:
    """The process of the services, on scratch databases of `database_backend` (left when `stack` closes) unless
    the overrides name a `database_url`."""
    if "database_url" not in overrides:
        names = list(services or ALL)
        overrides["database_url"] = await stack.enter_async_context(
            scratch_databases(database_backend, data_dir, names)
        )
    return Process(test_settings(data_dir, **overrides), services, demo=demo)


async def send_upload(client: httpx.AsyncClient, upload: dict[str, Any], data: bytes) -> httpx.Response:
    """Send a file to an images service upload target as a browser would: PUT with its headers (local storage), or
    a multipart POST with its fields then the file (S3's presigned POST)."""
    if upload["method"] == "PUT":
        return await client.put(upload["url"], content=data, headers=upload["headers"])
    return await client.post(upload["url"], data=upload["fields"], files={"file": ("upload", data)})


# --- people -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    user_id: str
    email: str
    display_name: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def mail_to(mail_dir: Path, address: str) -> list[EmailMessage]:
    """Messages written to `address` so far, oldest first."""
    return messages_to(mail_dir, address)


async def wait_for_mail(
    running: RunningGatherly, address: str, count: int = 1, timeout: float = 60.0
) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while len(found := mail_to(running.mail_dir, address)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no mail #{count} to {address} after {timeout}s")
        await asyncio.sleep(0.02)
    return found


async def sign_up(
    running: RunningGatherly,
    email: str | None = None,
    display_name: str = "Test Person",
    password: str = "correct horse battery staple",
    mail_timeout: float = 60.0,
) -> Person:
    """A confirmed, logged-in person, made the way a real one is: sign up, click the emailed link, log in."""
    email = email or f"person-{uuid.uuid4().hex[:10]}@example.org"
    client = running.client
    # The address may have had mail before (an invitation to it): wait for the confirmation, the next one.
    earlier = len(mail_to(running.mail_dir, email))
    response = await client.post(
        "/api/auth/signup", json={"email": email, "password": password, "display_name": display_name}
    )
    assert response.status_code == 202, response.text
    await wait_for_mail(running, email, count=earlier + 1, timeout=mail_timeout)
    token = newest_link_token(running.mail_dir, email)
    assert token, "the confirmation email has no /confirm?token= link"
    response = await client.post("/api/auth/confirm", json={"token": token})
    assert response.status_code == 200, response.text
    response = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens = response.json()
    me = await client.get("/api/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200, me.text
    return Person(
        user_id=me.json()["id"],
        email=email,
        display_name=display_name,
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


# Settings for a Gatherly that services' tests fill with people: password hashing at its cheapest (they sign many
# people up through the real flow; hashing cost is the users service's business), quick mail retries, and no
# sign-up or login limits per address (the users service's tests test those).
FAST_SETTINGS: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 8,
    "password_parallelism": 1,
    "mail_retry_initial_delay": 0.05,
    "mail_retry_max_delay": 0.2,
    "mail_poll_interval": 0.2,
    "signup_limit_per_minute": 0,
    "login_limit_per_minute": 0,
}


@dataclass
class ApiHelpers:
    """Thin helpers over a running Gatherly that services' test fixtures build on (GroupsApi, EventsApi): people
    signed up once per name, what was published on a topic, and other services' events delivered."""

    running: RunningGatherly
    _people: dict[str, Person] = field(default_factory=dict)

    @property
    def client(self) -> httpx.AsyncClient:
        return self.running.client

    async def person(self, display_name: str = "Test Person") -> Person:
        """The person of this name in this Gatherly, signed up on first use. Tests make their own groups, so
        people can be shared between the tests of a module (signing up is the slow part of setting up)."""
        if display_name not in self._people:
            self._people[display_name] = await sign_up(self.running, display_name=display_name)
        return self._people[display_name]

    async def people(self, *names: str) -> list[Person]:
        return [await self.person(name) for name in names]

    async def published(self, topic: str, key: str | None = None) -> list[Envelope]:
        """Everything relayed to `topic` so far (of one aggregate when given), in publishing order."""
        await self.running.settle()
        records = await self.running.process.platform.log.read(topic, limit=100_000)
        envelopes = [Envelope.from_record(record) for record in records]
        return [e for e in envelopes if key is None or e.aggregate_id == key]

    async def deliver(self, *events: IntegrationEvent) -> None:
        """Put other services' events on the log as their owner would, then wait until every consumer applied them."""
        now = datetime.now(UTC)
        await self.running.process.platform.log.publish([Envelope.wrap(event, now).to_message() for event in events])
        await self.running.settle()
