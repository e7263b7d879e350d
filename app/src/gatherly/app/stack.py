"""`gatherly stack up|down|status`: the distributed topology on one machine — a PostgreSQL database per service,
Kafka, Kafka Connect with a Debezium outbox connector per database, SeaweedFS (S3) for the images service, an SMTP
sink writing `<data dir>/mail/*.eml`, each service in one or more processes of its own (`gatherly run`, replicas) and
nginx in front with the gateway's prefix map, serving the web app too. What runs is written to `<data dir>/stack.json`
as it starts, so `down` and `status` work from another shell and a detached stack can be followed. Once up, the
supervising process keeps every replica running (one that exits is started again on its port) and sends the
gateway's traffic only to the replicas whose `/readyz` answers 200, as a Kubernetes ReplicaSet and Service do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from gatherly.app.compose import REPO_WEB_DIST
from gatherly.app.gateway import PREFIXES
from gatherly.app.server import KEEP_ALIVE_PROXY_S
from gatherly.app.services import ALL
from gatherly.app.topics import catalog_topics
from gatherly.kernel.db import Database
from gatherly.kernel.kafka_broker import running_kafka
from gatherly.kernel.kafka_connect import (
    ConnectClient,
    ConnectorFailed,
    OutboxConnector,
    connect_outbox,
    running_connect,
)
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.seaweedfs import running_seaweedfs
from gatherly.kernel.testing import free_port, stop_process

DEFAULT_DATABASE_URL = "postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/gatherly_{service}"
# A service imports, connects and joins its consumer groups in seconds; on a two-core machine shared with much else
# five of them starting at once took minutes.
READY_S = 600.0
STOP_S = 30.0
# `stack down`: the whole stack stops newest first, each part given STOP_S; past this it is killed.
DOWN_S = 300.0
# Readiness probes of the replicas, as deploy/k8s's: every PROBE_PERIOD_S, each allowed PROBE_TIMEOUT_S.
PROBE_PERIOD_S = 0.5
PROBE_TIMEOUT_S = 2.0
# With several replicas, a replica given SIGTERM stays up "not ready" this long: time for the supervisor's probe to
# see it and for nginx to reload without it, before it stops accepting connections.
REPLICA_DRAIN_S = 10.0
NGINX = "/usr/sbin/nginx"
STATE_FILE = "stack.json"
# Every long-running part, in the order the stack starts them (deploy/compose.yaml has a service of each name).
COMPONENTS = ("postgresql", "kafka", "kafka-connect", "s3", "smtp", *ALL, "gateway")
S3_BUCKET = "gatherly-images"
# PostgreSQL makes a logical replication slot only once every transaction that was writing anywhere in the cluster
# when it asked has ended: a long bench seed or a stuck test in another database holds a connector's start up. The
# stack waits as long as such transactions are the reason (naming them every SLOT_REPORT_S) and gives up after
# CONNECTOR_IDLE_S in which nothing held it up and the connector still did not stream.
CONNECTOR_IDLE_S = 180.0
CONNECTOR_MAX_S = 3600.0
SLOT_REPORT_S = 15.0
T = TypeVar("T")


class StackRunning(RuntimeError):
    """A stack already runs from this data directory."""


@dataclass(frozen=True)
class Component:
    """One part of the stack: its process (None when not ours, e.g. the system's PostgreSQL) and the port it serves.
    A service's replicas are one component each, numbered from 1; `routed` says whether the gateway sends to it."""

    name: str
    pid: int | None
    port: int
    replica: int | None = None
    routed: bool | None = None


@dataclass
class StackState:
    """`<data dir>/stack.json`, rewritten (atomically) whenever a part starts: the supervising `gatherly stack up`
    process, its process group, the gateway's URL, whether everything is ready, and each part."""

    path: Path
    pid: int = field(default_factory=os.getpid)
    pgid: int = field(default_factory=lambda: os.getpgid(0))
    url: str = ""
    ready: bool = False
    components: list[Component] = field(default_factory=list)

    def add(
        self, name: str, pid: int | None, port: int, replica: int | None = None, routed: bool | None = None
    ) -> None:
        self.components.append(Component(name, pid, port, replica, routed))
        self.save()

    def update_replica(self, name: str, replica: int, *, pid: int, routed: bool) -> None:
        """A replica started again (a new pid) or taken into or out of the gateway."""
        self.components = [
            Component(name, pid, c.port, replica, routed) if (c.name, c.replica) == (name, replica) else c
            for c in self.components
        ]

    def save(self) -> None:
        document = {k: v for k, v in asdict(self).items() if k != "path"}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2))
        temporary.replace(self.path)

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        path = data_dir.resolve() / STATE_FILE
        try:
            document: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        components = [Component(**c) for c in document.pop("components")]
        return cls(path=path, components=components, **document)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the number now belongs to someone else's process
        return False
    return True


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False


def component_up(component: Component) -> bool:
    return (component.pid is None or alive(component.pid)) and listening(component.port)


@dataclass
class Replica:
    """One process of a service (`gatherly run <service>`) on a port of its own; started again on the same port
    when it exits. `routed`: the gateway sends to it."""

    service: str
    number: int
    port: int
    command: list[str]
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    routed: bool = False
    failed_probes: int = 0
    answered: bool = False  # its /readyz has answered 200 since it was last started

    def start(self) -> subprocess.Popen[bytes]:
        self.answered = False
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT, env=self.env)
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_S + REPLICA_DRAIN_S)


@dataclass
class Stack:
    """What `running_stack` started: the gateway's URL and each service's replicas."""

    url: str
    bootstrap: str
    connect_url: str
    replicas: list[Replica] = field(default_factory=list)
    state: StackState | None = None
    nginx: subprocess.Popen[bytes] | None = None
    nginx_dir: Path = Path()
    gateway_port: int = 0

    def write_nginx_config(self, routed: Callable[[Replica], bool] = lambda replica: replica.routed) -> None:
        down = frozenset(r.port for r in self.replicas if not routed(r))
        config = nginx_config(self.nginx_dir, self.gateway_port, self.ports, REPO_WEB_DIST, down)
        (self.nginx_dir / "nginx.conf").write_text(config)

    @property
    def ports(self) -> dict[str, list[int]]:
        """Each service's replicas' ports."""
        ports: dict[str, list[int]] = {}
        for replica in self.replicas:
            ports.setdefault(replica.service, []).append(replica.port)
        return ports


# Passive health: a server that fails (refuses, resets, times out) is skipped for a while. A request is passed to
# the next server when its connection to one failed before it was sent (any method), and also, for idempotent
# methods, on a 502/503 (POST, PATCH and LOCK are never sent twice). Bodies are buffered so a request can be passed
# on, except the images service's (uploads stream through).
UPSTREAM_SERVER = "max_fails=2 fail_timeout=3s"


def nginx_config(
    folder: Path, port: int, services: dict[str, list[int]], web_dir: Path, down: frozenset[int] = frozenset()
) -> str:
    """nginx in the foreground with its files in `folder`: each prefix of the gateway's map to its service's
    replicas (responses streamed, so the notification stream passes as it comes; uploads to the images service
    streamed too), the web app at `/` (index.html for the app's own routes). Servers whose port is in `down` are
    listed but get no traffic (not ready)."""
    locations = []
    for name, prefixes in PREFIXES.items():
        if name not in services:
            continue
        streamed = " proxy_request_buffering off;" if name == "images" else ""
        for prefix in prefixes:
            match = f"= {prefix}" if prefix.startswith("/.well-known") else prefix
            locations.append(f"    location {match} {{{streamed} proxy_pass http://{name}; }}")

    def server(p: int) -> str:
        return f"server 127.0.0.1:{p} {UPSTREAM_SERVER}{' down' if p in down else ''}; "

    pool = f"keepalive 16; keepalive_timeout {KEEP_ALIVE_PROXY_S}s; "
    upstreams = "\n".join(
        f"  upstream {name} {{ {''.join(server(p) for p in ports)}{pool}}}" for name, ports in services.items()
    )
    web = (
        f"    location / {{ root {web_dir}; try_files $uri /index.html; }}"
        if (web_dir / "index.html").exists()
        else '    location / { default_type text/plain; return 200 "Gatherly API (web app not built: make web)\\n"; }'
    )
    return f"""daemon off;
pid {folder}/nginx.pid;
# A reload (a replica in or out) lets the old workers finish their requests, long streams cut after this.
worker_shutdown_timeout 30s;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  include /etc/nginx/mime.types;
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  client_max_body_size 25m;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_buffering off;
  proxy_read_timeout 1h;
  proxy_next_upstream error timeout http_502 http_503;
  proxy_next_upstream_tries 3;
{upstreams}
  server {{
    listen 127.0.0.1:{port};
{chr(10).join(locations)}
{web}
  }}
}}
"""


async def create_databases(template: str, services: list[str]) -> None:
    """Create each service's database (`{service}` filled in) where missing, as the URL's user (CREATEDB)."""
    for service in services:
        url = make_url(template.replace("{service}", service)).set(drivername="postgresql")
        admin = await asyncpg.connect(url.set(database="postgres").render_as_string(hide_password=False))
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database):
                await admin.execute(f'CREATE DATABASE "{url.database}"')
        finally:
            await admin.close()


async def prepare(template: str, bootstrap: str, connect_url: str, say: Callable[[str], None]) -> None:
    """Databases, topics, schemas and outbox connectors, in that order (a connector needs its outbox table)."""
    names = list(ALL)
    await create_databases(template, names)
    async with KafkaLog(bootstrap) as log:
        topics: list[TopicConfig] = catalog_topics(partitions=4)
        await log.ensure_topics(topics)
    say(f"{len(topics)} topics on Kafka at {bootstrap}")
    for name in names:
        db = Database(template.replace("{service}", name))
        try:
            await db.migrate(ALL[name].migrations)
        finally:
            await db.dispose()
    say("every service's database migrated")
    async with ConnectClient(connect_url, timeout=CONNECTOR_MAX_S) as connect:
        for name in names:
            url = template.replace("{service}", name)
            connector: OutboxConnector = await while_slot_waits(
                connect_outbox(connect, name, url), url, f"{name}'s outbox connector", say
            )
            say(f"{connector.name} streams {connector.database}'s outbox")


async def slot_blockers(database_url: str) -> list[str]:
    """The transactions that a session of this database waits for on a lock (a replication slot being made waits so
    for every writing transaction in the cluster), each described: pid, database, age, state and query."""
    url = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        rows = await connection.fetch(
            """SELECT DISTINCT b.pid, b.datname, extract(epoch FROM now() - b.xact_start)::int AS seconds, b.state,
                      left(regexp_replace(b.query, '\\s+', ' ', 'g'), 80) AS query
               FROM pg_stat_activity AS waiting
               CROSS JOIN LATERAL unnest(pg_blocking_pids(waiting.pid)) AS blocker(pid)
               JOIN pg_stat_activity AS b ON b.pid = blocker.pid
               WHERE waiting.datname = current_database() AND waiting.wait_event_type = 'Lock'
               ORDER BY seconds DESC"""
        )
    finally:
        await connection.close()
    return [f"pid {r['pid']} in {r['datname']}, open {r['seconds']} s, {r['state']}: {r['query']}" for r in rows]


async def while_slot_waits(
    work: Awaitable[T], database_url: str, what: str, say: Callable[[str], None], idle_s: float = CONNECTOR_IDLE_S
) -> T:
    """Await `work` (a connector's start) for as long as transactions open elsewhere hold its database's replication
    slot up, saying which every SLOT_REPORT_S; fail once it has waited idle_s with nothing holding it up."""
    task = asyncio.ensure_future(work)
    waited_since, reported = time.monotonic(), 0.0
    try:
        while not (await asyncio.wait({task}, timeout=1.0))[0]:
            now = time.monotonic()
            if blockers := await slot_blockers(database_url):
                waited_since = now  # someone else's transaction, not a stuck connector
                if now - reported >= SLOT_REPORT_S:
                    reported = now
                    say(f"{what} waits for transactions open on PostgreSQL to end: {'; '.join(blockers)}")
            elif now - waited_since > idle_s:
                raise ConnectorFailed(f"{what} not streaming after {idle_s:g} s with no transaction holding it up")
    finally:
        task.cancel()
    return task.result()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited at start ({process.returncode}): {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {READY_S:g}s: {log.read_text()[-3000:]}")


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while not listening(port):
        if process.poll() is not None:
            raise RuntimeError(f"port {port}'s process exited at start ({process.returncode}): {log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} within {READY_S:g}s: {log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def _process(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        stop_process(process, STOP_S)


def service_environment(
    *,
    data_dir: Path,
    database_url: str,
    bootstrap: str,
    public_url: str,
    users_url: str,
    s3_endpoint: str,
    s3_key: str,
    s3_secret: str,
    smtp_port: int,
    smtp_host: str = "127.0.0.1",
) -> dict[str, str]:
    """The settings every service process of the stack gets (deploy/compose.yaml gives its services the same)."""
    return {
        "GATHERLY_DATA_DIR": str(data_dir),  # shared: the mail files and flags
        "GATHERLY_DATABASE_URL": database_url,
        "GATHERLY_MIGRATE_ON_START": "false",
        "GATHERLY_LOG_BACKEND": "kafka",
        "GATHERLY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GATHERLY_RELAY": "debezium",  # Debezium publishes the outboxes
        "GATHERLY_PUBLIC_URL": public_url,
        "GATHERLY_JWKS_URL": f"{users_url}/.well-known/jwks.json",
        "GATHERLY_TRUSTED_PROXY_HOPS": "1",  # nginx appends the client's address
        # The images service's pictures on the S3 server (it makes its bucket at start).
        "GATHERLY_STORAGE_BACKEND": "s3",
        "GATHERLY_S3_ENDPOINT_URL": s3_endpoint,
        "GATHERLY_S3_BUCKET": S3_BUCKET,
        "GATHERLY_S3_ACCESS_KEY_ID": s3_key,
        "GATHERLY_S3_SECRET_ACCESS_KEY": s3_secret,
        # The users and notifications services' mail through SMTP, to the sink.
        "GATHERLY_MAIL_BACKEND": "smtp",
        "GATHERLY_SMTP_HOST": smtp_host,
        "GATHERLY_SMTP_PORT": str(smtp_port),
        "GATHERLY_SMTP_STARTTLS": "false",
    }


@contextlib.contextmanager
def running_stack(
    data_dir: Path,
    port: int,
    *,
    database_url: str = DEFAULT_DATABASE_URL,
    bootstrap: str | None = None,
    connect_url: str | None = None,
    replicas: int = 1,
    say: Callable[[str], None] = print,
) -> Iterator[Stack]:
    """Start everything (Kafka and Connect too, unless their addresses are given), `replicas` processes of each
    service; stop it all, newest first."""
    data_dir = data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if (running := StackState.load(data_dir)) and alive(running.pid):
        raise StackRunning(f"a stack already runs from {data_dir} (pid {running.pid}): `gatherly stack down` first")
    state = StackState(data_dir / STATE_FILE, url=f"http://localhost:{port}")
    state.save()
    with contextlib.ExitStack() as started:
        started.callback(state.path.unlink, missing_ok=True)  # the last thing done: nothing of it runs any more
        postgres = make_url(database_url.replace("{service}", "users"))
        state.add("postgresql", None, postgres.port or 5432)  # the system's server (scripts/postgres.sh)
        if bootstrap is None:
            say("starting Kafka (a minute on a cold machine)")
            bootstrap = started.enter_context(running_kafka(data_dir / "kafka"))
            state.add("kafka", int((data_dir / "kafka" / "broker.pid").read_text()), int(bootstrap.rsplit(":")[-1]))
        if connect_url is None:
            say("starting Kafka Connect with Debezium")
            worker = started.enter_context(running_connect(data_dir / "connect", bootstrap))
            assert worker.process is not None
            connect_url = worker.url
            state.add("kafka-connect", worker.process.pid, worker.port)
        say("starting SeaweedFS (S3) for the images service")
        s3_key, s3_secret = "gatherly", secrets.token_urlsafe(24)  # this run's only identity
        s3 = started.enter_context(running_seaweedfs(data_dir / "seaweedfs", s3_key, s3_secret))
        state.add("s3", s3.pid, int(s3.endpoint.rsplit(":")[-1]))
        smtp_port = free_port()
        mail_sink = started.enter_context(
            _process(
                [sys.executable, "-m", "gatherly.app.mailsink", str(data_dir / "mail"), str(smtp_port)],
                logs / "mail.log",
            )
        )
        _wait_listening(smtp_port, mail_sink, logs / "mail.log")
        state.add("smtp", mail_sink.pid, smtp_port)
        say(f"SMTP sink on port {smtp_port} writes each message to {data_dir / 'mail'}")
        asyncio.run(prepare(database_url, bootstrap, connect_url, say))
        stack = Stack(url=state.url, bootstrap=bootstrap, connect_url=connect_url)
        drain = {"GATHERLY_SHUTDOWN_DRAIN_SECONDS": str(REPLICA_DRAIN_S)} if replicas > 1 else {}
        env = {
            **os.environ,
            **service_environment(
                data_dir=data_dir,
                database_url=database_url,
                bootstrap=bootstrap,
                public_url=stack.url,
                users_url=f"http://127.0.0.1:{port}",  # the JWKS through the gateway, from any users replica
                s3_endpoint=s3.endpoint,
                s3_key=s3_key,
                s3_secret=s3_secret,
                smtp_port=smtp_port,
            ),
            **drain,
            "PYTHONUNBUFFERED": "1",  # each log line in logs/<service>.log as it happens
        }
        for name in ALL:
            for number in range(1, replicas + 1):
                log = logs / (f"{name}.log" if number == 1 else f"{name}-{number}.log")
                replica_port = free_port()
                command = [sys.executable, "-m", "gatherly.app", "run", name, "--port", str(replica_port)]
                stack.replicas.append(Replica(name, number, replica_port, command, log, env))
        # Stopped newest first by the exit stack: all replicas at once (each drains), after the gateway.
        started.callback(_stop_all, stack.replicas)
        for replica in stack.replicas:  # all at once: each takes seconds to import and start
            replica.start()
            say(f"{replica.service} #{replica.number} starting on port {replica.port}")
        for replica in stack.replicas:
            assert replica.process is not None
            _wait_ready(f"http://127.0.0.1:{replica.port}/readyz", replica.process, replica.log)
            replica.routed = replica.answered = True
            state.add(replica.service, replica.process.pid, replica.port, replica.number, routed=True)
            say(f"{replica.service} #{replica.number} ready")
        stack.nginx_dir = data_dir / "nginx"
        stack.nginx_dir.mkdir(exist_ok=True)
        stack.gateway_port = port
        stack.write_nginx_config()
        nginx_dir = stack.nginx_dir
        nginx = started.enter_context(
            _process(
                [NGINX, "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log"), "-c", str(nginx_dir / "nginx.conf")],
                logs / "nginx.log",
            )
        )
        _wait_ready(f"http://127.0.0.1:{port}/.well-known/jwks.json", nginx, logs / "nginx.log")
        stack.nginx = nginx
        stack.state = state
        state.add("gateway", nginx.pid, port)
        state.ready = True
        state.save()
        say(f"Gatherly is up on {stack.url} (logs in {logs})")
        yield stack
        say("stopping")


def _stop_all(replicas: list[Replica]) -> None:
    """SIGTERM to every replica at once (each drains and finishes its requests), then wait for each."""
    for replica in replicas:
        if replica.process is not None and replica.process.poll() is None:
            replica.process.terminate()
    for replica in replicas:
        replica.stop()


def supervise(stack: Stack, say: Callable[[str], None]) -> None:
    """Until interrupted: start again every replica that exited, and keep the gateway sending only to the ready
    ones (stack.json says which)."""
    asyncio.run(keep_replicas(stack, say))


async def keep_replicas(stack: Stack, say: Callable[[str], None]) -> None:
    """The supervisor's loop: probe every replica, start again those that exited, route to the ready ones."""
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
        while True:
            ready = await asyncio.gather(*(_probe(client, replica, say) for replica in stack.replicas))
            await asyncio.to_thread(_route, stack, dict(zip((id(r) for r in stack.replicas), ready, strict=True)), say)
            await asyncio.sleep(PROBE_PERIOD_S)


async def _probe(client: httpx.AsyncClient, replica: Replica, say: Callable[[str], None]) -> bool:
    """Whether the replica is ready. A replica that exited is started again. An answer other than 200 or a refused
    connection makes it unready at once (a draining replica answers 503); a timeout only when it is the second in a
    row (a busy machine)."""
    assert replica.process is not None
    if (code := replica.process.poll()) is not None:
        say(f"{replica.service} #{replica.number} exited ({code}); starting it again on port {replica.port}")
        replica.start()
        replica.failed_probes = 0
        return False
    try:
        ready = (await client.get(f"http://127.0.0.1:{replica.port}/readyz")).status_code == 200
    except httpx.TimeoutException:
        replica.failed_probes += 1
        return replica.routed and replica.failed_probes < 2
    except httpx.TransportError:
        ready = False
    replica.failed_probes = 0 if ready else replica.failed_probes + 1
    replica.answered |= ready
    return ready


def _route(stack: Stack, ready: dict[int, bool], say: Callable[[str], None]) -> None:
    """Route to the ready replicas of each service — when none is ready, to all that have been ready since they
    started (nginx's passive health then decides: better a slow replica than none; but never one still starting,
    which would refuse every request and which stack.json would show as routed); when that changes, reload nginx
    and rewrite stack.json."""
    wanted = {}
    for service in stack.ports:
        replicas = [r for r in stack.replicas if r.service == service]
        any_ready = any(ready[id(r)] for r in replicas)
        wanted.update({id(r): ready[id(r)] or (not any_ready and r.answered) for r in replicas})
    changed = [r for r in stack.replicas if r.routed != wanted[id(r)]]
    pids_changed = stack.state is not None and any(
        c.pid != r.process.pid
        for r in stack.replicas
        for c in stack.state.components
        if (c.name, c.replica) == (r.service, r.number) and r.process is not None
    )
    if changed:
        stack.write_nginx_config(lambda replica: wanted[id(replica)])
        assert stack.nginx is not None
        reload_nginx(stack.nginx.pid)
    for replica in changed:  # only now: stack.json says "routed" once nginx's new workers route so
        replica.routed = wanted[id(replica)]
        say(f"{replica.service} #{replica.number} {'in' if replica.routed else 'out of'} the gateway")
    if (changed or pids_changed) and stack.state is not None:
        for replica in stack.replicas:
            assert replica.process is not None
            stack.state.update_replica(replica.service, replica.number, pid=replica.process.pid, routed=replica.routed)
        stack.state.save()


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _accepting(worker: int) -> bool:
    """An nginx worker that still takes new connections: alive, and not renamed "worker process is shutting down"."""
    try:
        return b"shutting down" not in Path(f"/proc/{worker}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def reload_nginx(master: int, timeout: float = 30.0) -> None:
    """SIGHUP to nginx's master, which starts workers with the new configuration and tells the old ones to stop
    accepting and finish their requests; return once a new worker runs and no old one accepts any more."""
    before = _children(master)
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while not _children(master) - before or any(_accepting(worker) for worker in before):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nginx (pid {master}) did not reload within {timeout:g}s")
        time.sleep(0.05)


def start_detached(command: list[str], data_dir: Path, on_line: Callable[[str], None]) -> StackState:
    """Run `command` (a foreground `gatherly stack up`) in a session of its own with its output in
    `<data dir>/logs/stack.log`; pass each line it writes to `on_line`; return once the stack is ready. Raises
    RuntimeError with the log's end when it exits first."""
    data_dir = data_dir.resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    log = data_dir / "logs" / "stack.log"
    with log.open("ab") as output:
        start = output.tell()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    with log.open("rb") as lines:
        lines.seek(start)
        while True:
            for line in lines.read().decode(errors="replace").splitlines():
                on_line(line)
            state = StackState.load(data_dir)
            if state is not None and state.pid == process.pid and state.ready:
                return state
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the stack exited at start ({process.returncode}); the end of {log}:\n{tail}")
            time.sleep(0.2)


def stop_stack(data_dir: Path, say: Callable[[str], None]) -> bool:
    """Stop the stack running from `data_dir`: SIGTERM to its `gatherly stack up`, which stops every part newest
    first; whatever of it still runs after DOWN_S (or outlived a supervisor that was killed) is killed. False when
    no stack was running."""
    state = StackState.load(data_dir)
    if state is None:
        return False
    if alive(state.pid):
        say(f"stopping the stack (pid {state.pid})")
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_S
        while alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for pid in [state.pid, *(c.pid for c in state.components if c.pid is not None)]:
        if _ours(pid, state.pgid):
            say(f"killing pid {pid}, still running")
            os.kill(pid, signal.SIGKILL)
    state.path.unlink(missing_ok=True)
    return True


def _ours(pid: int, pgid: int) -> bool:
    """Alive and still in the stack's process group (a number reused by another process is left alone)."""
    try:
        return alive(pid) and os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False
