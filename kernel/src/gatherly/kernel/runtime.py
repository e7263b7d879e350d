"""How a service is described (ServiceDefinition) and run (ServiceHost): its app, relay, consumers and tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import MetaData, text

from gatherly.kernel.auth import TokenVerifier
from gatherly.kernel.clock import Clock
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import (
    ConsumerRegistry,
    ConsumerWorker,
    ParsedRecords,
    RetryPolicy,
    event_topic,
    prune_inbox,
    stuck_workers,
)
from gatherly.kernel.flags import Flags
from gatherly.kernel.log.base import MessageLog
from gatherly.kernel.mail import Mailer
from gatherly.kernel.relay import OutboxCleaner, OutboxRelay
from gatherly.kernel.resilience import Resilience
from gatherly.kernel.revocation import RevocationFeed
from gatherly.kernel.sagas import keep_saga_gauge
from gatherly.kernel.settings import Settings
from gatherly.kernel.supervision import Supervisor
from gatherly.kernel.uow import OutboxSignal, UnitOfWork
from gatherly.kernel.web import Readiness, RequestContextMiddleware, install_error_handlers, install_health

log = structlog.get_logger(__name__)


@dataclass
class Platform:
    """What the composition root builds once per process and hands to every service it hosts."""

    settings: Settings
    log: MessageLog
    verifier: TokenVerifier
    mailer: Mailer
    flags: Flags
    resilience: Resilience
    http: httpx.AsyncClient
    clock: Clock
    # Records the log hands to several consumer groups of this process are parsed once for all of them.
    parsed_records: ParsedRecords = field(default_factory=ParsedRecords)


@dataclass
class ServiceContext:
    """Everything one service's code may reach: its own database, the platform, and its readiness."""

    name: str
    platform: Platform
    db: Database
    signal: OutboxSignal
    readiness: Readiness
    # Service-specific objects built at start (e.g. the users service's signing keys).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.platform.settings

    @property
    def verifier(self) -> TokenVerifier:
        return self.platform.verifier

    @property
    def clock(self) -> Clock:
        return self.platform.clock


@dataclass(frozen=True)
class ServiceDefinition:
    """What a service is: declared once in its package's `__init__.py`."""

    name: str
    title: str
    routers: Sequence[APIRouter]
    metadata: MetaData
    migrations: Path
    unit_of_work: Callable[[ServiceContext], UnitOfWork]
    consumers: ConsumerRegistry = field(default_factory=ConsumerRegistry)
    # Topics this service publishes to (created at start with the configured partition count).
    topics: Sequence[str] = ()
    # Loops that run beside the API (reminder schedulers, mail retries); they get the context and stop on cancel.
    tasks: Sequence[Callable[[ServiceContext], Awaitable[None]]] = ()
    on_start: Callable[[ServiceContext], Awaitable[None]] | None = None


# A consumer whose poll loop has not gone round for this long (at least) is stuck (readiness turns red).
MIN_STUCK_SECONDS = 10.0
NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class ServiceHost:
    """Runs one service in this process: migrations (when configured), the outbox relay, one worker per
    consumer group, background tasks, and the FastAPI app. Stopping drains in the safe order."""

    def __init__(self, definition: ServiceDefinition, platform: Platform) -> None:
        settings = platform.settings
        self.definition = definition
        self.context = ServiceContext(
            name=definition.name,
            platform=platform,
            db=Database(settings.database_url_for(definition.name), consumers=len(definition.consumers.specs)),
            signal=OutboxSignal(),
            readiness=Readiness(),
        )
        self.relay = OutboxRelay(
            definition.name,
            self.context.db,
            platform.log,
            self.context.signal,
            poll_interval=settings.relay_poll_interval,
        )
        retry = RetryPolicy(
            max_attempts=settings.consumer_max_attempts,
            initial_delay=settings.consumer_retry_initial_delay,
            max_delay=settings.consumer_retry_max_delay,
        )
        # This service's table of revoked subjects, read into the process's set that the token verifier asks.
        self.revocations = RevocationFeed(
            self.context.db, platform.verifier.revoked, interval=settings.revocation_refresh_seconds
        )
        self.workers = [
            ConsumerWorker(spec, platform.log, self.new_unit_of_work, retry=retry, parsed=platform.parsed_records)
            for spec in definition.consumers.specs.values()
        ]
        # Every long-running task is supervised: restarted with backoff after any error, readiness turns red
        # while one stays down. Relay and consumers stop by themselves after their batch; tasks are cancelled.
        self.supervisor = Supervisor(definition.name, unready_after=settings.supervision_unready_after)
        self._draining_tasks: list[asyncio.Task[None]] = []
        self._cancelled_tasks: list[asyncio.Task[None]] = []
        self.app = self._build_app()

    @property
    def name(self) -> str:
        return self.definition.name

    def new_unit_of_work(self) -> UnitOfWork:
        uow = self.definition.unit_of_work(self.context)
        uow.revocations_changed = self.revocations.wake
        return uow

    def _build_app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        # FastAPI's own OpenTelemetry (off here: tracing is kernel/tracing.py's) would otherwise look up the global
        # tracer, meter and logger providers on every request to find out whether it is on.
        app = FastAPI(
            title=f"Gatherly {self.definition.title}", version="1", lifespan=lifespan, telemetry=NO_FASTAPI_TELEMETRY
        )
        app.state.context = self.context
        app.state.host = self
        install_error_handlers(app)
        app.add_middleware(RequestContextMiddleware, service=self.name)
        self.context.readiness.checks = [
            self._database_answers,
            self.relay.check,
            self.supervisor.check,
            self._consumers_go_round,
        ]
        install_health(app, self.context.readiness)
        # The service's routes go into the app's own router, ahead of the rest: FastAPI (0.165) matches the routes
        # of an included router twice per request (to choose the router, then the route in it), and each route
        # tried before the right one costs a few µs. The health and documentation routes are the gateway's to
        # serve (gatherly.app.gateway), so they are tried last.
        own = [route for router in self.definition.routers for route in router.routes]
        app.router.routes[:0] = own
        return app

    async def _consumers_go_round(self) -> None:
        # A round is a poll that may wait 0.5 s plus a batch: only a round far longer than that is a hang, whatever
        # the supervision threshold is set to.
        threshold = max(self.supervisor.unready_after, MIN_STUCK_SECONDS)
        stuck = stuck_workers(self.workers, threshold)
        if stuck:
            raise RuntimeError(f"consumers stuck for over {threshold:g}s: {', '.join(stuck)}")

    async def _database_answers(self) -> None:
        async with self.context.db.read_session() as session:
            await session.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        await self.context.db.migrate(self.definition.migrations)

    async def start(self) -> None:
        settings = self.context.settings
        if settings.should_migrate_on_start:
            await self.migrate()
        topics = set(self.definition.topics) | {
            t for spec in self.definition.consumers.specs.values() for t in spec.topics
        }
        await self.context.platform.log.ensure_topics(
            [event_topic(topic, settings.topic_partitions) for topic in sorted(topics)]
        )
        if self.definition.on_start is not None:
            await self.definition.on_start(self.context)
        # Before the first request: a restarted process refuses revoked subjects from the start.
        await self.revocations.refresh()
        supervise = self.supervisor.start
        self._cancelled_tasks.append(supervise("revocations", self.revocations.run))
        if settings.relay == "polling":
            self._draining_tasks.append(supervise("relay", self.relay.run))
        else:  # Debezium publishes the outbox; its rows still need deleting
            cleaner = OutboxCleaner(self.name, self.context.db)
            self._cancelled_tasks.append(supervise("outbox cleanup", cleaner.run))
        for worker in self.workers:
            self._draining_tasks.append(supervise(f"consumer {worker.spec.group}", worker.run))
        for task in self.definition.tasks:
            name = getattr(task, "__name__", "task")
            self._cancelled_tasks.append(supervise(name, lambda task=task: task(self.context)))  # type: ignore[misc]
        self._cancelled_tasks.append(supervise("inbox pruning", self._prune_inbox_hourly))
        self._cancelled_tasks.append(supervise("saga gauge", lambda: keep_saga_gauge(self.name, self.context.db)))
        self.context.readiness.set_ready()
        log.info("service started", service=self.name, consumers=len(self.workers))

    async def _prune_inbox_hourly(self) -> None:
        while True:
            await prune_inbox(self.context.db, older_than=timedelta(days=self.context.settings.inbox_retention_days))
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        """Not ready first, then consumers finish their record and commit, then the relay flushes, then exit."""
        self.context.readiness.set_draining()
        self.supervisor.stop()
        for worker in self.workers:
            worker.stop()
        self.relay.stop()
        for task in self._cancelled_tasks:
            task.cancel()
        tasks = self._draining_tasks + self._cancelled_tasks
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        for result in results:
            if isinstance(result, Exception):
                log.warning("stopped with an error", service=self.name, error=repr(result))
        self._draining_tasks.clear()
        self._cancelled_tasks.clear()
        await self.context.db.dispose()
        log.info("service stopped", service=self.name)


async def service_context(request: Request) -> ServiceContext:
    """FastAPI dependency: the ServiceContext of the app serving this request."""
    context: ServiceContext = request.app.state.context
    return context
