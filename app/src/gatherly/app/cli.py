"""The `gatherly` command: up, run, migrate, dlq, replay, kafka, debezium, stack, keys, users, notifications, sagas,
docs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.app.compose import Process, build_log
from gatherly.app.logging import configure_logging
from gatherly.app.server import serve
from gatherly.app.services import ALL
from gatherly.app.topics import catalog_topics, topics_of
from gatherly.kernel import tracing
from gatherly.kernel.db import Database
from gatherly.kernel.delivery import DLQ_SUFFIX, rebuild_group, replay_dead_letters
from gatherly.kernel.files import PRIVATE_UMASK
from gatherly.kernel.log.base import GroupNotEmpty
from gatherly.kernel.sagas import SagaState, find_saga, list_sagas
from gatherly.kernel.settings import LogBackend, Settings

if TYPE_CHECKING:
    from gatherly.users.store import UsersUnitOfWork

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
    tracing.configure_from_environment()
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
    tracing.configure_from_environment()
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
    help="Debezium (services with GATHERLY_RELAY=debezium): the outbox connectors on Kafka Connect.",
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
    committed event reaches Kafka: run the services with GATHERLY_RELAY=debezium. Safe to run again."""
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


STACK_DATA_DIR = Path("./var/stack")
StackDataDir = Annotated[Path, typer.Option(help="Kafka, Connect, S3, mail, media, logs and stack.json")]


@stack.command("up")
def stack_up(
    port: Annotated[int, typer.Option(help="The gateway's port (nginx)")] = 8080,
    data_dir: StackDataDir = STACK_DATA_DIR,
    database_url: Annotated[
        str, typer.Option(help="PostgreSQL URL template, {service} replaced by each service's name")
    ] = "postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/gatherly_{service}",
    kafka_bootstrap: Annotated[str | None, typer.Option(help="Use this Kafka instead of starting one")] = None,
    connect_url: Annotated[str | None, typer.Option(help="Use this Kafka Connect instead of starting one")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; return once ready (`gatherly stack down` stops)")
    ] = False,
    replicas: Annotated[
        int, typer.Option(min=1, max=8, help="Processes of each service behind the gateway (restarted when they exit)")
    ] = 1,
) -> None:
    """Start PostgreSQL databases per service, Kafka, Kafka Connect with Debezium's outbox connectors, SeaweedFS
    (S3), an SMTP sink writing <data dir>/mail/*.eml, the five services (`gatherly run`, relays off) and nginx in
    front; Ctrl-C stops everything. Needs scripts/postgres.sh, kafka.sh, debezium.sh, seaweedfs.sh and nginx.sh to
    have run (`make stack-deps`). Once up, a replica that exits is started again, and the gateway sends only to
    replicas whose /readyz answers 200."""
    import signal
    import sys

    from gatherly.app.stack import StackRunning, StackState, alive, running_stack, start_detached, supervise

    def say(line: str) -> None:
        console.print(f"[bold magenta]stack[/] {line}", soft_wrap=True, highlight=False)

    if detach:
        if (running := StackState.load(data_dir)) and alive(running.pid):
            console.print(f"[red]refused:[/] a stack already runs from {data_dir} (pid {running.pid})")
            raise typer.Exit(1)
        command = [sys.executable, "-m", "gatherly.app", "stack", "up", "--port", str(port)]
        command += ["--data-dir", str(data_dir), "--database-url", database_url, "--replicas", str(replicas)]
        command += ["--kafka-bootstrap", kafka_bootstrap] if kafka_bootstrap else []
        command += ["--connect-url", connect_url] if connect_url else []
        with console.status("[bold magenta]starting the stack[/]") as status:

            def progress(line: str) -> None:
                if line.startswith("stack "):
                    console.print(f"[bold magenta]stack[/] {line.removeprefix('stack ')}", highlight=False)
                    status.update(f"[bold magenta]after:[/] {line.removeprefix('stack ')}")

            try:
                state = start_detached(command, data_dir, progress)
            except RuntimeError as error:
                console.print(f"[red]{error}[/]")
                raise typer.Exit(1) from error
        say(f"running in the background (pid {state.pid}): `gatherly stack status`, `gatherly stack down`")
        return

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # stop as on Ctrl-C
    os.umask(PRIVATE_UMASK)
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            running_stack(
                data_dir,
                port,
                database_url=database_url,
                bootstrap=kafka_bootstrap,
                connect_url=connect_url,
                replicas=replicas,
                say=say,
            ) as started,
        ):
            supervise(started, say)
    except StackRunning as error:
        console.print(f"[red]refused:[/] {error}")
        raise typer.Exit(1) from error
    say("stopped")


@stack.command("down")
def stack_down(data_dir: StackDataDir = STACK_DATA_DIR) -> None:
    """Stop the stack running from the data directory (started with `gatherly stack up --detach` or in another
    shell), every part of it; data stays for the next `up`."""
    from gatherly.app.stack import stop_stack

    if stop_stack(data_dir, lambda line: console.print(f"[bold magenta]stack[/] {line}")):
        console.print("[bold magenta]stack[/] stopped")
    else:
        console.print(f"no stack runs from {data_dir}")


@stack.command("status")
def stack_status(data_dir: StackDataDir = STACK_DATA_DIR) -> None:
    """Each part of the stack running from the data directory: up or down, its pid and port. Exit status 0 when all
    are up, 1 when a part is down, 3 when no stack runs."""
    from gatherly.app.stack import StackState, alive, component_up

    state = StackState.load(data_dir)
    if state is None or not alive(state.pid):
        console.print(f"no stack runs from {data_dir}")
        raise typer.Exit(3)
    table = Table("component", "state", "pid", "port", "replica", "gateway")
    down = 0
    for component in state.components:
        up = component_up(component)
        down += not up
        pid = str(component.pid) if component.pid is not None else "(system)"
        replica = "" if component.replica is None else f"#{component.replica}"
        routed = {None: "", True: "routed", False: "not routed"}[component.routed]
        state_text = "[green]up[/]" if up else "[red]down[/]"
        table.add_row(component.name, state_text, pid, str(component.port), replica, routed)
    console.print(table)
    phase = "ready" if state.ready else "starting"
    console.print(f"{phase} at {state.url} (pid {state.pid}); {len(state.components) - down} up, {down} down")
    if down:
        raise typer.Exit(1)


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


users = typer.Typer(help="Accounts (users service): lock and unlock them.", no_args_is_help=True)
app.add_typer(users, name="users")


def _on_users_db(work: Callable[[UsersUnitOfWork], Awaitable[bool]]) -> bool:
    """Run a users use case on the users database; a refused input or unknown account is a message, not a traceback."""
    from gatherly.kernel.errors import DomainError
    from gatherly.users.store import UsersUnitOfWork

    settings = _settings()

    async def go() -> bool:
        db = Database(settings.database_url_for("users"))
        try:
            if settings.should_migrate_on_start:
                await db.migrate(ALL["users"].migrations)
            return await work(UsersUnitOfWork(db))
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except DomainError as error:
        console.print(f"[red]{error.detail}[/]")
        raise typer.Exit(1) from error


@users.command("lock")
def users_lock(
    email: Annotated[str, typer.Argument(help="The account's email address")],
    reason: Annotated[str, typer.Option(help="Why (kept in the user.locked event)")],
) -> None:
    """Lock an account: no login or refresh, its sessions end, and every service refuses its access tokens within
    seconds (user.locked). The person is told the account is locked only after giving the right password."""
    from gatherly.users.service import lock_account

    if _on_users_db(lambda uow: lock_account(uow, email=email, reason=reason)):
        console.print(f"locked {email}")
    else:
        console.print(f"{email} was locked already")


@users.command("unlock")
def users_unlock(email: Annotated[str, typer.Argument(help="The account's email address")]) -> None:
    """Unlock an account: the person can log in again; access tokens issued before stay refused (user.unlocked)."""
    from gatherly.users.service import unlock_account

    if _on_users_db(lambda uow: unlock_account(uow, email=email)):
        console.print(f"unlocked {email}")
    else:
        console.print(f"{email} was not locked")


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


sagas = typer.Typer(
    help="Sagas (account deletions, group deletions) in every service database: list them and see one.",
    no_args_is_help=True,
)
app.add_typer(sagas, name="sagas")


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


async def _in_each_database(
    settings: Settings, read: Callable[[AsyncConnection], Awaitable[list[SagaState]]]
) -> list[tuple[str, SagaState]]:
    """(service, saga) for what `read` finds in each service's database. A database without a sagas table (the
    service was never started or migrated) has none: said once, not a failure."""
    found: list[tuple[str, SagaState]] = []
    for name in ALL:
        db = Database(settings.database_url_for(name))
        try:
            async with db.read_connection() as connection:
                found += [(name, saga) for saga in await read(connection)]
        except DBAPIError as error:
            if not _is_missing_table(error):
                raise
            console.print(f"[dim]{name}: no sagas table (never migrated)[/]")
        finally:
            await db.dispose()
    return found


def _is_missing_table(error: DBAPIError) -> bool:
    text = str(error.orig)
    return "no such table" in text or "does not exist" in text


@sagas.command("list")
def sagas_list(
    status: Annotated[str | None, typer.Option(help="Only sagas in this status: pending | completed | failed")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind: account_deletion | group_deletion")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many per service")] = 100,
) -> None:
    """Every service's sagas, newest first: kind, id, status, step, who answered, deadline, reason."""
    settings = _settings()

    async def read(connection: AsyncConnection) -> list[SagaState]:
        return await list_sagas(connection, status=status, kind=kind, limit=limit)

    found = asyncio.run(_in_each_database(settings, read))
    table = Table("service", "kind", "id", "status", "step", "answered", "started", "deadline", "reason")
    for service, saga in found:
        table.add_row(
            service,
            saga.kind,
            saga.id,
            saga.status,
            saga.step,
            ", ".join(saga.replies),
            _when(saga.created_at),
            _when(saga.deadline_at),
            (saga.reason or "")[:200],
        )
    console.print(table)
    console.print(f"{len(found)} saga(s)")


@sagas.command("show")
def sagas_show(saga_id: Annotated[str, typer.Argument(help="The saga's id (from `gatherly sagas list`)")]) -> None:
    """One saga: its state, each reply (who answered, when, what they reported) and the rest of its data."""
    settings = _settings()

    async def read(connection: AsyncConnection) -> list[SagaState]:
        return await find_saga(connection, saga_id)

    found = asyncio.run(_in_each_database(settings, read))
    if not found:
        console.print(f"[red]no saga {saga_id}[/]")
        raise typer.Exit(1)
    for service, saga in found:
        facts = Table("", "", show_header=False, box=None)
        for label, value in (
            ("service", service),
            ("kind", saga.kind),
            ("id", saga.id),
            ("status", saga.status),
            ("step", saga.step),
            ("started", _when(saga.created_at)),
            ("updated", _when(saga.updated_at)),
            ("deadline", _when(saga.deadline_at)),
            ("reason", saga.reason or ""),
        ):
            facts.add_row(label, value)
        console.print(facts)
        replies = Table("answered", "at", "reported")
        for who, reply in saga.replies.items():
            details = {k: v for k, v in reply.items() if k != "at"}
            replies.add_row(who, str(reply.get("at", "")), json.dumps(details, sort_keys=True))
        console.print(replies)
        rest = {k: v for k, v in saga.data.items() if k != "replies"}
        console.print_json(json.dumps(rest, sort_keys=True, default=str))


@app.command()
def docs() -> None:
    """Write docs/openapi.json, the reference in docs/api.md and docs/events.md (the tests fail when they drift)."""
    from gatherly.app.documents import write_documents

    for path in write_documents():
        console.print(f"wrote {path}")


def main() -> None:
    app()
