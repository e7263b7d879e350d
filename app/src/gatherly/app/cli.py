"""The `gatherly` command: up, run, migrate, dlq, replay, kafka, debezium, stack, keys, docs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gatherly.app.compose import Process, build_log
from gatherly.app.logging import configure_logging
from gatherly.app.server import serve
from gatherly.app.services import ALL
from gatherly.app.topics import catalog_topics, topics_of
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import DLQ_SUFFIX, rebuild_group, replay_dead_letters
from gatherly.kernel.files import PRIVATE_UMASK
from gatherly.kernel.log.base import GroupNotEmpty
from gatherly.kernel.settings import LogBackend, Settings

app = typer.Typer(help="Gatherly: local groups and events.", no_args_is_help=True)
dlq = typer.Typer(help="Dead-letter topics: see and replay parked messages.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")
console = Console()


def _settings(**overrides: object) -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:
        # A setting the operator got wrong: say which and why, without a traceback.
        for problem in error.errors():
            name = "GATHERLY_" + "__".join(str(part) for part in problem["loc"]).upper()
            console.print(f"[red]invalid setting {name}:[/] {problem['msg'].removeprefix('Value error, ')}")
        raise typer.Exit(2) from error
    updates = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="Port (GATHERLY_PORT)")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (GATHERLY_HOST)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where data lives (GATHERLY_DATA_DIR)")] = None,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Start without demo data")] = False,
) -> None:
    """Start everything in one process: five services, the gateway and the web app."""
    os.umask(PRIVATE_UMASK)  # databases (signing keys), mail files, logs: the owner's only
    settings = _settings(port=port, host=host, data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_json)
    process = Process(settings, demo=not no_demo)
    console.print(f"[bold magenta]Gatherly[/] on {settings.effective_public_url}  (data in {settings.data_dir})")
    serve(process, settings.host, settings.port)


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="users | groups | events | notifications | images")],
    port: Annotated[int | None, typer.Option()] = None,
    host: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run one service (its API, relay and consumers) in this process: distributed mode."""
    if service not in ALL:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(ALL)}")
    os.umask(PRIVATE_UMASK)
    settings = _settings(port=port, host=host)
    configure_logging(settings.log_level, settings.log_json)
    serve(Process(settings, [service], serve_web=False, demo=False), settings.host, settings.port)


@app.command()
def migrate(
    services: Annotated[list[str] | None, typer.Argument(help="Services to migrate (default: all)")] = None,
) -> None:
    """Bring each service's database schema to the newest revision."""
    settings = _settings()

    async def go() -> None:
        for name in services or list(ALL):
            definition = ALL[name]
            db = Database(settings.database_url_for(name))
            try:
                await db.migrate(definition.migrations)
            finally:
                await db.dispose()
            console.print(f"migrated [bold]{name}[/]")

    asyncio.run(go())


@dlq.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Option(help="Only this topic's dead letters (e.g. membership)")] = None,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    """Show parked messages with the consumer that gave up and why."""
    settings = _settings()

    async def go() -> None:
        log = build_log(settings)
        await log.start()
        try:
            topics = [topic] if topic else sorted({t for d in ALL.values() for t in topics_of(d)})
            table = Table("dead-letter topic", "offset", "consumer", "type", "attempts", "error")
            for name in topics:
                for record in await log.read(name + DLQ_SUFFIX, limit=limit):
                    h = record.headers
                    table.add_row(
                        f"{record.topic}[{record.partition}]",
                        str(record.offset),
                        h.get("dlq.consumer_group", "?"),
                        h.get("type", "?"),
                        h.get("dlq.attempts", "?"),
                        h.get("dlq.error", "")[:80],
                    )
            console.print(table)
        finally:
            await log.close()

    asyncio.run(go())


@dlq.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="The original topic, e.g. membership")],
    group: Annotated[str | None, typer.Option(help="Only what this consumer group parked")] = None,
) -> None:
    """Redeliver parked messages, each once, to the consumer group that parked it only (a message that still
    fails is parked again). A bounded pass: what was parked when it started. Ordering caveat: a redelivered
    message arrives after any newer events for its key that the group has applied meanwhile."""
    settings = _settings()
    original = topic.removesuffix(DLQ_SUFFIX)
    groups = (
        [group]
        if group
        else sorted(g for d in ALL.values() for g, s in d.consumers.specs.items() if original in s.topics)
    )

    async def go() -> int:
        log = build_log(settings)
        await log.start()
        try:
            return sum([await replay_dead_letters(log, original, group=g) for g in groups])
        finally:
            await log.close()

    console.print(f"replayed {asyncio.run(go())} message(s)")


@app.command()
def replay(
    group: Annotated[str, typer.Argument(help="Consumer group whose read model to rebuild, e.g. groups.profiles")],
) -> None:
    """Rewind a consumer group to the beginning of its topics, so its read model is rebuilt from the log.
    Run it while the service is stopped; its handlers upsert, so replaying over existing rows is safe."""
    settings = _settings()
    owner = next((d for d in ALL.values() if group in d.consumers.specs), None)
    if owner is None:
        raise typer.BadParameter(f"no consumer group {group!r}")
    spec = owner.consumers.specs[group]

    async def go() -> None:
        db = Database(settings.database_url_for(owner.name))
        log = build_log(settings)
        await log.start()
        try:
            # Refuses before the inbox is touched while the group has live members.
            await rebuild_group(db, log, group, sorted(spec.topics))
        finally:
            await log.close()
            await db.dispose()

    try:
        asyncio.run(go())
    except GroupNotEmpty as error:
        console.print(f"[red]refused:[/] {error}")
        raise typer.Exit(1) from error
    console.print(f"{group} will read {', '.join(sorted(spec.topics))} from the beginning")


kafka = typer.Typer(help="Kafka (GATHERLY_LOG_BACKEND=kafka): create the event catalog's topics.", no_args_is_help=True)
app.add_typer(kafka, name="kafka")


@kafka.command("init")
def kafka_init() -> None:
    """Create the topics of the event catalog on the Kafka cluster (GATHERLY_KAFKA_BOOTSTRAP_SERVERS), with
    GATHERLY_TOPIC_PARTITIONS partitions, GATHERLY_KAFKA_REPLICATION_FACTOR replicas and their retention. Topics
    that exist are left as they are. Safe to run again."""
    settings = _settings()
    if settings.log_backend is not LogBackend.KAFKA:
        console.print(
            "[red]refused:[/] GATHERLY_LOG_BACKEND is not 'kafka'; set it and GATHERLY_KAFKA_BOOTSTRAP_SERVERS"
        )
        raise typer.Exit(2)
    topics = catalog_topics(settings.topic_partitions)

    async def go() -> None:
        log = build_log(settings)
        await log.start()
        try:
            await log.ensure_topics(topics)
        finally:
            await log.close()

    asyncio.run(go())
    table = Table("topic", "partitions", "replicas", "retention")
    for topic in topics:
        retention = "forever" if topic.retention_ms is None else f"{topic.retention_ms / 86_400_000:g} days"
        table.add_row(topic.name, str(topic.partitions), str(settings.kafka_replication_factor), retention)
    console.print(table)
    console.print(f"{len(topics)} topics exist on {settings.kafka_bootstrap_servers}")


debezium = typer.Typer(
    help="Debezium (services with GATHERLY_OUTBOX_RELAY=false): the outbox connectors on Kafka Connect.",
    no_args_is_help=True,
)
app.add_typer(debezium, name="debezium")


@debezium.command("register")
def debezium_register(
    services: Annotated[list[str] | None, typer.Argument(help="Services to connect (default: all)")] = None,
    connect_url: Annotated[
        str, typer.Option(envvar="GATHERLY_KAFKA_CONNECT_URL", help="Kafka Connect's REST API")
    ] = "http://127.0.0.1:8083",
) -> None:
    """Publish each service database's outbox table (PostgreSQL, migrated) and put its Debezium connector
    (deploy/debezium/outbox-connector.json) on Kafka Connect; return once each connector streams. From then on every
    committed event reaches Kafka: run the services with GATHERLY_OUTBOX_RELAY=false. Safe to run again."""
    from gatherly.kernel.kafka_connect import ConnectClient, connect_outbox, outbox_connector

    settings = _settings()
    names = services or list(ALL)
    if unknown := [name for name in names if name not in ALL]:
        raise typer.BadParameter(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    try:
        for name in names:
            outbox_connector(name, settings.database_url_for(name))
    except ValueError as error:
        console.print(f"[red]refused:[/] {error} (set GATHERLY_DATABASE_URL to PostgreSQL)")
        raise typer.Exit(2) from error

    async def go() -> None:
        async with ConnectClient(connect_url) as connect:
            for name in names:
                connector = await connect_outbox(connect, name, settings.database_url_for(name))
                console.print(f"[bold]{connector.name}[/] streams {connector.database}'s outbox")

    asyncio.run(go())


stack = typer.Typer(
    help="The distributed stack on this machine, every part in a process of its own.", no_args_is_help=True
)
app.add_typer(stack, name="stack")


@stack.command("up")
def stack_up(
    port: Annotated[int, typer.Option(help="The gateway's port (nginx)")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="Kafka, Connect, mail, media, logs")] = Path("./var/stack"),
    database_url: Annotated[
        str, typer.Option(help="PostgreSQL URL template, {service} replaced by each service's name")
    ] = "postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/gatherly_{service}",
    kafka_bootstrap: Annotated[str | None, typer.Option(help="Use this Kafka instead of starting one")] = None,
    connect_url: Annotated[str | None, typer.Option(help="Use this Kafka Connect instead of starting one")] = None,
) -> None:
    """Start PostgreSQL databases per service, Kafka, Kafka Connect with Debezium's outbox connectors, the five
    services (`gatherly run`, relays off) and nginx in front; Ctrl-C stops everything. Needs scripts/postgres.sh,
    scripts/kafka.sh, scripts/debezium.sh and scripts/nginx.sh to have run (`make stack-deps`)."""
    import signal

    from gatherly.app.stack import running_stack

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # stop as on Ctrl-C
    os.umask(PRIVATE_UMASK)
    with (
        contextlib.suppress(KeyboardInterrupt),
        running_stack(
            data_dir,
            port,
            database_url=database_url,
            bootstrap=kafka_bootstrap,
            connect_url=connect_url,
            say=lambda line: console.print(f"[bold magenta]stack[/] {line}", soft_wrap=True),
        ),
    ):
        while True:
            time.sleep(3600)
    console.print("[bold magenta]stack[/] stopped")


keys = typer.Typer(help="Keys that sign access tokens (users service): rotate and list.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("rotate")
def keys_rotate() -> None:
    """Add a signing key: published in the JWKS at once, signing new tokens after a short activation delay.
    Keys no unexpired token can name any more are retired (dropped from the JWKS)."""
    from gatherly.users.service import rotate_keys_of

    settings = _settings()

    async def go() -> tuple[str, list[str]]:
        db = Database(settings.database_url_for("users"))
        try:
            if settings.should_migrate_on_start:
                await db.migrate(ALL["users"].migrations)
            rotation = await rotate_keys_of(db, settings)
        finally:
            await db.dispose()
        return rotation.new_kid, rotation.retired

    new_kid, retired = asyncio.run(go())
    console.print(f"added key [bold]{new_kid}[/] (signs after {settings.signing_key_activation_seconds:g} s)")
    if retired:
        console.print(f"retired {', '.join(retired)}")


@keys.command("list")
def keys_list() -> None:
    """Show every signing key: when it was added, when it signs from, whether it is retired."""
    from gatherly.users.service import keys_of

    settings = _settings()

    async def go() -> Table:
        db = Database(settings.database_url_for("users"))
        try:
            table = Table("kid", "algorithm", "created", "signs from", "retired")
            for key in await keys_of(db):
                table.add_row(
                    key.kid,
                    key.algorithm,
                    key.created_at.isoformat(timespec="seconds"),
                    key.activates_at.isoformat(timespec="seconds"),
                    key.retired_at.isoformat(timespec="seconds") if key.retired_at else "",
                )
            return table
        finally:
            await db.dispose()

    console.print(asyncio.run(go()))


notifications = typer.Typer(
    help="Notification sends that failed after their retries: list them and send them again.", no_args_is_help=True
)
app.add_typer(notifications, name="notifications")


@notifications.command("failed")
def notifications_failed(limit: Annotated[int, typer.Option(help="At most this many")] = 100) -> None:
    """Sends (one notification on one channel) that gave up after their bounded retries, oldest first."""
    from gatherly.notifications.service import failed_deliveries

    settings = _settings()

    async def go() -> Table:
        db = Database(settings.database_url_for("notifications"))
        try:
            failed = await failed_deliveries(db, limit)
        finally:
            await db.dispose()
        table = Table("send", "user", "attempts", "last error")
        for delivery in failed:
            table.add_row(delivery.id, delivery.user_id, str(delivery.attempts), (delivery.last_error or "")[:200])
        return table

    console.print(asyncio.run(go()))


@notifications.command("retry")
def notifications_retry(
    sends: Annotated[
        list[str] | None, typer.Argument(help="Send ids from `failed` (default: every failed one)")
    ] = None,
) -> None:
    """Queue failed sends again with fresh attempts; the running service sends them (each at most once)."""
    from gatherly.notifications.service import retry_failed_deliveries
    from gatherly.notifications.store import NotificationsUnitOfWork

    settings = _settings()

    async def go() -> int:
        db = Database(settings.database_url_for("notifications"))
        try:
            return await retry_failed_deliveries(NotificationsUnitOfWork(db), sends or ())
        finally:
            await db.dispose()

    console.print(f"queued {asyncio.run(go())} send(s) again")


@app.command()
def docs() -> None:
    """Write docs/openapi.json, the reference in docs/api.md and docs/events.md (the tests fail when they drift)."""
    from gatherly.app.documents import write_documents

    for path in write_documents():
        console.print(f"wrote {path}")


def main() -> None:
    app()
