"""`gatherly stack up`: the distributed topology on one machine — a PostgreSQL database per service, Kafka, Kafka
Connect with a Debezium outbox connector per database, each service in a process of its own (`gatherly run`) and
nginx in front with the gateway's prefix map, serving the web app too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from gatherly.app.compose import REPO_WEB_DIST
from gatherly.app.gateway import PREFIXES
from gatherly.app.services import ALL
from gatherly.app.topics import catalog_topics
from gatherly.kernel.db import Database
from gatherly.kernel.kafka_broker import running_kafka
from gatherly.kernel.kafka_connect import ConnectClient, connect_outbox, running_connect
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.log.kafka import KafkaLog
from gatherly.kernel.testing import free_port

DEFAULT_DATABASE_URL = "postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/gatherly_{service}"
# A service imports, connects and joins its consumer groups in seconds; on a two-core machine shared with much else
# five of them starting at once took minutes.
READY_S = 600.0
STOP_S = 30.0
NGINX = "/usr/sbin/nginx"


@dataclass
class Stack:
    """What `running_stack` started: the gateway's URL and each service's own port."""

    url: str
    bootstrap: str
    connect_url: str
    ports: dict[str, int] = field(default_factory=dict)


def nginx_config(folder: Path, port: int, services: dict[str, int], web_dir: Path) -> str:
    """nginx in the foreground with its files in `folder`: each prefix of the gateway's map to its service's
    process (bodies and responses streamed, so uploads and the notification stream pass as they come), the web app
    at `/` (index.html for the app's own routes)."""
    locations = []
    for name, prefixes in PREFIXES.items():
        for prefix in prefixes:
            match = f"= {prefix}" if prefix.startswith("/.well-known") else prefix
            locations.append(f"    location {match} {{ proxy_pass http://{name}; }}")
    upstreams = "\n".join(
        f"  upstream {name} {{ server 127.0.0.1:{p}; keepalive 16; }}" for name, p in services.items()
    )
    web = (
        f"    location / {{ root {web_dir}; try_files $uri /index.html; }}"
        if (web_dir / "index.html").exists()
        else '    location / { default_type text/plain; return 200 "Gatherly API (web app not built: make web)\\n"; }'
    )
    return f"""daemon off;
pid {folder}/nginx.pid;
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
  proxy_request_buffering off;
  proxy_read_timeout 1h;
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
    async with ConnectClient(connect_url) as connect:
        for name in names:
            connector = await connect_outbox(connect, name, template.replace("{service}", name))
            say(f"{connector.name} streams {connector.database}'s outbox")


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


@contextlib.contextmanager
def _process(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_stack(
    data_dir: Path,
    port: int,
    *,
    database_url: str = DEFAULT_DATABASE_URL,
    bootstrap: str | None = None,
    connect_url: str | None = None,
    say: Callable[[str], None] = print,
) -> Iterator[Stack]:
    """Start everything (Kafka and Connect too, unless their addresses are given); stop it all, newest first."""
    data_dir = data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as started:
        if bootstrap is None:
            say("starting Kafka (a minute on a cold machine)")
            bootstrap = started.enter_context(running_kafka(data_dir / "kafka"))
        if connect_url is None:
            say("starting Kafka Connect with Debezium")
            connect_url = started.enter_context(running_connect(data_dir / "connect", bootstrap)).url
        asyncio.run(prepare(database_url, bootstrap, connect_url, say))
        stack = Stack(url=f"http://localhost:{port}", bootstrap=bootstrap, connect_url=connect_url)
        stack.ports = {name: free_port() for name in ALL}
        env = {
            **os.environ,
            "GATHERLY_DATA_DIR": str(data_dir),  # shared: the mail files, local media and flags
            "GATHERLY_DATABASE_URL": database_url,
            "GATHERLY_MIGRATE_ON_START": "false",
            "GATHERLY_LOG_BACKEND": "kafka",
            "GATHERLY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "GATHERLY_RELAY": "debezium",  # Debezium publishes the outboxes
            "GATHERLY_PUBLIC_URL": stack.url,
            "GATHERLY_JWKS_URL": f"http://127.0.0.1:{stack.ports['users']}/.well-known/jwks.json",
            "GATHERLY_TRUSTED_PROXY_HOPS": "1",  # nginx appends the client's address
            "PYTHONUNBUFFERED": "1",  # each log line in logs/<service>.log as it happens
        }
        services = {}
        for name, service_port in stack.ports.items():  # all at once: each takes seconds to import and start
            command = [sys.executable, "-m", "gatherly.app", "run", name, "--port", str(service_port)]
            services[name] = started.enter_context(_process(command, logs / f"{name}.log", env))
            say(f"{name} starting on port {service_port}")
        for name, process in services.items():
            _wait_ready(f"http://127.0.0.1:{stack.ports[name]}/readyz", process, logs / f"{name}.log")
            say(f"{name} ready")
        nginx_dir = data_dir / "nginx"
        nginx_dir.mkdir(exist_ok=True)
        (nginx_dir / "nginx.conf").write_text(nginx_config(nginx_dir, port, stack.ports, REPO_WEB_DIST))
        nginx = started.enter_context(
            _process(
                [NGINX, "-p", str(nginx_dir), "-e", str(nginx_dir / "error.log"), "-c", str(nginx_dir / "nginx.conf")],
                logs / "nginx.log",
            )
        )
        _wait_ready(f"http://127.0.0.1:{port}/.well-known/jwks.json", nginx, logs / "nginx.log")
        say(f"Gatherly is up on {stack.url} (logs in {logs})")
        yield stack
        say("stopping")
