"""Builds the process-wide platform (log, mail, flags, token verifier) from settings: the composition root."""

from __future__ import annotations

from collections.abc import Collection

import httpx

from gatherly.app.services import ALL
from gatherly.kernel.auth import HttpJwksSource, JwksSource, TokenVerifier
from gatherly.kernel.clock import SystemClock
from gatherly.kernel.files import private_directory
from gatherly.kernel.flags import FileFlagProvider, Flags, ensure_flags_file
from gatherly.kernel.log.base import MessageLog
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.mail import FileMailer, Mailer, SmtpMailer
from gatherly.kernel.resilience import Resilience
from gatherly.kernel.runtime import Platform
from gatherly.kernel.settings import LogBackend, MailBackend, Settings

# Embedded-log polling for other processes' appends: seldom needed when every service is in this process, often
# when each runs in its own. Every idle consumer looks this often (a few statements each), so it is idle CPU.
POLL_ALONE = 0.5
POLL_SHARED = 0.05


def log_poll_interval(settings: Settings, services: Collection[str]) -> float:
    if settings.log_poll_interval is not None:
        return settings.log_poll_interval
    return POLL_ALONE if set(services) >= set(ALL) else POLL_SHARED


def build_log(settings: Settings, services: Collection[str] = ()) -> MessageLog:
    """The message log for a process hosting `services` (none: a tool that only reads or publishes)."""
    if settings.log_backend is LogBackend.KAFKA:
        from gatherly.kernel.log import kafka  # type: ignore[attr-defined,unused-ignore]

        kafka_log: MessageLog = kafka.KafkaLog(settings.kafka_bootstrap_servers)
        return kafka_log
    private_directory(settings.data_dir)
    return EmbeddedLog(settings.log_path, poll_interval=log_poll_interval(settings, services))


def build_mailer(settings: Settings, resilience: Resilience) -> Mailer:
    if settings.mail_backend is MailBackend.SMTP:
        return SmtpMailer(
            resilience,
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            starttls=settings.smtp_starttls,
        )
    return FileMailer(settings.mail_dir)


def build_platform(
    settings: Settings, services: Collection[str], *, jwks_client: httpx.AsyncClient | None = None
) -> Platform:
    """The platform of a process hosting `services`. `jwks_client` reaches the users service when no outside JWKS
    URL is configured: in `gatherly up` a client bound in-process to the gateway, otherwise the public URL."""
    resilience = Resilience()
    http = httpx.AsyncClient(timeout=10.0)
    ensure_flags_file(settings.flags_path)
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
        flags=Flags(FileFlagProvider(settings.flags_path)),
        resilience=resilience,
        http=http,
        clock=SystemClock(),
    )
