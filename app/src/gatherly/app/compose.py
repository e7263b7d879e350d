"""The composition root: builds a process from settings (the platform, the hosted services, the gateway in front)
and owns its start and stop. `gatherly up` hosts all five services, `gatherly run <service>` one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import structlog
from starlette.types import Receive, Scope, Send

from gatherly.app.demo import seed_demo
from gatherly.app.gateway import Gateway, front_door
from gatherly.app.services import ALL
from gatherly.kernel.auth import HttpJwksSource, JwksSource, TokenVerifier
from gatherly.kernel.boundary import install_boundary
from gatherly.kernel.clock import SystemClock
from gatherly.kernel.delivery import ParsedRecords
from gatherly.kernel.files import private_directory
from gatherly.kernel.flags import Flags, flag_provider
from gatherly.kernel.log import log_from_settings
from gatherly.kernel.log.base import MessageLog
from gatherly.kernel.loop_health import LoopLagProbe
from gatherly.kernel.mail import FileMailer, Mailer, SmtpMailer
from gatherly.kernel.resilience import Resilience
from gatherly.kernel.runtime import Platform, ServiceHost
from gatherly.kernel.settings import LogBackend, MailBackend, Settings
from gatherly.kernel.supervision import Supervisor

log = structlog.get_logger(__name__)

REPO_WEB_DIST = Path(__file__).resolve().parents[4] / "web" / "dist"


# Embedded-log polling for other processes' appends: seldom needed when every service is in this process, often
# when each runs in its own. Every idle consumer looks this often (a few statements each), so it is idle CPU.
POLL_ALONE = 0.5
POLL_SHARED = 0.05


def log_poll_interval(settings: Settings, services: Collection[str]) -> float:
    if settings.log_poll_interval is not None:
        return settings.log_poll_interval
    return POLL_ALONE if set(services) >= set(ALL) else POLL_SHARED


def build_log(settings: Settings, services: Collection[str] = ()) -> MessageLog:
    """The message log for a process hosting `services` (none: a tool that only reads or publishes): the
    embedded file in the data directory, or Kafka (GATHERLY_LOG_BACKEND=kafka)."""
    private_directory(settings.data_dir)
    return log_from_settings(
        settings, embedded_path=settings.log_path, embedded_poll_interval=log_poll_interval(settings, services)
    )


def build_mailer(settings: Settings, resilience: Resilience) -> Mailer:
    if settings.mail_backend is MailBackend.SMTP:
        return SmtpMailer(
            resilience,
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            starttls=settings.smtp_starttls,
            connections=settings.smtp_connections,
        )
    return FileMailer(settings.mail_dir)


def build_platform(
    settings: Settings, services: Collection[str] = (), *, jwks_client: httpx.AsyncClient | None = None
) -> Platform:
    """What the services a process hosts share: log, mailer, flags, token verifier, HTTP client, clock.

    `jwks_client` reaches the users service when no outside JWKS URL is configured: in `gatherly up`
    a client bound in-process to the gateway, otherwise the public URL."""
    resilience = Resilience()
    http = httpx.AsyncClient(timeout=10.0)
    jwks_url = settings.jwks_url or "/.well-known/jwks.json"
    source: JwksSource
    if settings.jwks_url:
        source = HttpJwksSource(settings.jwks_url, http, resilience)
    elif jwks_client is not None:
        source = HttpJwksSource(jwks_url, jwks_client, resilience)
    else:
        source = HttpJwksSource(settings.effective_public_url + jwks_url, http, resilience)
    return Platform(
        settings=settings,
        log=build_log(settings, services),
        verifier=TokenVerifier(source, issuer=settings.effective_issuer, audience=settings.jwt_audience),
        mailer=build_mailer(settings, resilience),
        flags=Flags(flag_provider(settings.flags_provider, settings.flags_path)),
        resilience=resilience,
        http=http,
        clock=SystemClock(),
        # Only the embedded log hands the process's consumer groups the same record objects; Kafka's are each
        # group's own, so keeping parsed ones would cost every record and never be asked for again.
        parsed_records=ParsedRecords() if settings.log_backend is LogBackend.EMBEDDED else ParsedRecords(capacity=0),
    )


async def enforce_log_retention_hourly(message_log: MessageLog) -> None:
    """Kafka enforces retention itself; the embedded log needs to be asked."""
    enforce = getattr(message_log, "enforce_retention", None)
    if enforce is None:
        return
    while True:
        deleted = await enforce()
        if deleted:
            log.info("old log records deleted", records=deleted)
        await asyncio.sleep(3600)


class Process:
    """One process: the named services (all five for `gatherly up`) behind the gateway, as one ASGI app.
    Its lifespan starts the log, then each service, then runs `on_started` (demo data); stopping is the reverse."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] | None = None,
        *,
        web_dir: Path | None = None,
        serve_web: bool = True,
        demo: bool = False,
    ) -> None:
        self.settings = settings
        names = list(services or ALL)
        jwks_client = None
        if "users" in names and not settings.jwks_url:
            # Tokens are verified against the users service's JWKS, reached in-process through the gateway.
            jwks_client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self), base_url="http://gatherly.internal"
            )
        self.platform: Platform = build_platform(settings, names, jwks_client=jwks_client)
        self.hosts = [ServiceHost(ALL[name], self.platform) for name in names]
        for host in self.hosts:
            install_boundary(host.app, host.name, settings)
        # Run once every service is up.
        self.on_started: list[Callable[[], Awaitable[None]]] = []
        if demo:
            self.on_started.append(lambda: seed_demo(self, settings))
        self.gateway = Gateway(
            self.hosts, settings, lifespan=self.lifespan, web_dir=web_dir or REPO_WEB_DIST, serve_web=serve_web
        )
        self.asgi = front_door(self.gateway, settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    def host(self, name: str) -> ServiceHost:
        return next(h for h in self.hosts if h.name == name)

    @asynccontextmanager
    async def lifespan(self, _: Any) -> AsyncIterator[None]:
        # Start the log, then every service (in declaration order); stop them in reverse.
        async with AsyncExitStack() as stack:
            await self.platform.log.start()
            await self.platform.flags.start()
            stack.callback(self.platform.flags.close)
            stack.push_async_callback(self.platform.http.aclose)
            stack.push_async_callback(self.platform.log.close)
            stack.push_async_callback(self.platform.mailer.close)
            for host in self.hosts:
                await stack.enter_async_context(host.app.router.lifespan_context(host.app))
            for started in self.on_started:
                await started()
            supervisor = Supervisor("process")
            retention = supervisor.start("log retention", lambda: enforce_log_retention_hourly(self.platform.log))
            stack.callback(retention.cancel)
            # One probe for the process's loop, exported under each hosted service: a probe per service would
            # measure the same loop several times over, each waking it 20 times a second.
            probe = supervisor.start("loop lag probe", LoopLagProbe(*(host.name for host in self.hosts)).run)
            stack.callback(probe.cancel)
            yield
