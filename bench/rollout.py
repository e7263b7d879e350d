"""Rolling-update drill: replicas of the groups service are replaced one at a time while clients keep writing and
reading through a balancer that sends requests only to ready replicas — what a Kubernetes Service does with its
endpoints. Each replica gets SIGTERM as a pod does after its preStop: /readyz turns 503 at once, the process keeps
serving for GATHERLY_SHUTDOWN_DRAIN_SECONDS while the balancer notices, then finishes what is in flight and exits;
its replacement starts on the same port and joins once ready (maxSurge 1 / maxUnavailable 0 in spirit: the other
replica serves throughout).

The stack is real processes sharing the SQLite files and the embedded log: `gatherly up` (users and the rest) and
`gatherly run groups` replicas. Figures: requests, failed requests (any transport error or 5xx), writes lost or
doubled (every group the clients were told was created must exist exactly once), the longest time without a
successful answer, and latencies.

    uv run python bench/rollout.py [--replicas 2] [--rounds 1] [--clients 4] [--drain 2] [--json]

Writes bench/reports/rollout.md unless --json (then prints the figures as JSON, for the test).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx

from gatherly.app.testing import sign_up
from gatherly.kernel.testing import free_port

REPORT = Path(__file__).parent / "reports" / "rollout.md"


@dataclass
class Figures:
    replicas: int
    rounds: int
    clients: int
    drain_seconds: float
    readiness_period_seconds: float
    requests: int = 0
    writes: int = 0
    reads: int = 0
    failed: list[str] = field(default_factory=list)
    writes_missing: int = 0
    writes_doubled: int = 0
    longest_pause_ms: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    replacements: list[float] = field(default_factory=list)  # seconds from SIGTERM to the new replica ready
    load_average: float = 0.0


class ReadyEndpoints:
    """The balancer: probes each replica's /readyz every `period` seconds as Kubernetes' readiness probe does
    (timeout 3 s; ready after one success, unready after two failures in a row, as deploy/k8s sets it) and hands
    out the ready ones round-robin, each request on a new connection (a Service balances connections)."""

    def __init__(self, ports: list[int], period: float, timeout: float = 3.0, failure_threshold: int = 2) -> None:
        self.ports = ports
        self.period = period
        self.timeout = timeout
        self.failure_threshold = failure_threshold
        self.failures = dict.fromkeys(ports, failure_threshold)  # unready until a probe succeeds
        self.routed = {port: asyncio.Event() for port in ports}  # set while the balancer sends to the port
        self._turn = itertools.count()

    async def watch(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            await asyncio.gather(*(self._probe(client, port) for port in self.ports))

    async def _probe(self, client: httpx.AsyncClient, port: int) -> None:
        while True:
            try:
                ok = (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                ok = False
            self.failures[port] = 0 if ok else self.failures[port] + 1
            if self.failures[port] < self.failure_threshold:
                self.routed[port].set()
            else:
                self.routed[port].clear()
            await asyncio.sleep(self.period)

    def pick(self) -> int | None:
        ready = [port for port in self.ports if self.failures[port] < self.failure_threshold]
        if not ready:
            return None
        return ready[next(self._turn) % len(ready)]


def _start(env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gatherly.app", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _until_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the process on port {port} exited with {process.returncode}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {port} not ready in {timeout} s")
            await asyncio.sleep(0.1)


async def _client(
    number: int,
    balancer: ReadyEndpoints,
    auth: dict[str, str],
    figures: Figures,
    created: set[str],
    answered_at: list[float],
    stop: asyncio.Event,
) -> list[float]:
    """Create a group (write), read it back (read), again and again; every answer is counted."""
    latencies: list[float] = []
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    async with httpx.AsyncClient(transport=transport, timeout=30.0, headers=auth) as client:
        for n in itertools.count():
            if stop.is_set():
                return latencies
            name = f"Drill {number}-{n}"
            port = balancer.pick()
            if port is None:
                figures.failed.append(f"no ready replica (probes failing in a row: {balancer.failures})")
                await asyncio.sleep(0.05)
                continue
            started = time.monotonic()
            try:
                response = await client.post(f"http://127.0.0.1:{port}/api/groups", json={"name": name})
                figures.requests += 1
                figures.writes += 1
                if response.status_code != 201:
                    figures.failed.append(f"POST {response.status_code} {response.text[:120]}")
                    continue
                created.add(name)
                group_id = response.json()["id"]
                answered_at.append(time.monotonic())
                latencies.append(answered_at[-1] - started)
                port = balancer.pick() or port
                started = time.monotonic()
                read = await client.get(f"http://127.0.0.1:{port}/api/groups/{group_id}")
                figures.requests += 1
                figures.reads += 1
                if read.status_code != 200:
                    figures.failed.append(f"GET {read.status_code} {read.text[:120]}")
                    continue
                answered_at.append(time.monotonic())
                latencies.append(answered_at[-1] - started)
            except httpx.TransportError as error:
                figures.requests += 1
                figures.failed.append(f"{type(error).__name__}: {error}")
    return latencies


async def _groups_named_drill(client: httpx.AsyncClient, auth: dict[str, str]) -> list[str]:
    names: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"member": "me", "limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/groups", params=params, headers=auth)).json()
        names += [g["name"] for g in page["items"] if g["name"].startswith("Drill ")]
        cursor = page.get("next_cursor")
        if not cursor:
            return names


async def drill(
    workdir: Path, *, replicas: int, rounds: int, clients: int, drain: float, readiness_period: float
) -> Figures:
    figures = Figures(replicas, rounds, clients, drain, readiness_period)
    front = free_port()
    ports = [free_port() for _ in range(replicas)]
    env = {
        **os.environ,
        "GATHERLY_DATA_DIR": str(workdir),  # the SQLite files and the embedded log, shared by every process
        "GATHERLY_MIGRATE_ON_START": "true",
        "GATHERLY_PUBLIC_URL": f"http://127.0.0.1:{front}",  # replicas verify tokens with the users service's JWKS
        "GATHERLY_SHUTDOWN_DRAIN_SECONDS": str(drain),
        "GATHERLY_PASSWORD_TIME_COST": "1",
        "GATHERLY_PASSWORD_MEMORY_KIB": "8",
        "GATHERLY_PASSWORD_PARALLELISM": "1",
        "GATHERLY_LOG_LEVEL": "WARNING",
    }
    whole = _start(env, "up", "--no-demo", "--port", str(front))
    running: dict[int, subprocess.Popen[bytes]] = {}
    try:
        await _until_ready(front, whole)
        for port in ports:
            running[port] = _start(env, "run", "groups", "--port", str(port))
        for port in ports:
            await _until_ready(port, running[port])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=30) as client:
            person = await sign_up(SimpleNamespace(client=client, mail_dir=workdir / "mail"))  # type: ignore[arg-type]
            auth = {"Authorization": f"Bearer {person.access_token}"}
            balancer = ReadyEndpoints(ports, readiness_period)
            watcher = asyncio.create_task(balancer.watch())
            await asyncio.gather(*(balancer.routed[port].wait() for port in ports))
            stop = asyncio.Event()
            created: set[str] = set()
            answered_at: list[float] = []
            workers = [
                asyncio.create_task(_client(n, balancer, auth, figures, created, answered_at, stop))
                for n in range(clients)
            ]
            await asyncio.sleep(1.0)  # traffic before the first replacement
            for _ in range(rounds):
                for port in ports:
                    terminated = time.monotonic()
                    running[port].send_signal(signal.SIGTERM)
                    await asyncio.to_thread(running[port].wait, drain + 45)
                    running[port] = _start(env, "run", "groups", "--port", str(port))
                    await _until_ready(port, running[port])
                    await balancer.routed[port].wait()  # the balancer sends to it before the next one goes
                    figures.replacements.append(round(time.monotonic() - terminated, 2))
            await asyncio.sleep(1.0)  # traffic after the last replacement
            stop.set()
            latencies = [x for batch in await asyncio.gather(*workers) for x in batch]
            watcher.cancel()

            names = await _groups_named_drill(client, auth)
            figures.writes_missing = len(created - set(names))
            figures.writes_doubled = len(names) - len(set(names))
        latencies.sort()
        figures.p50_ms = round(statistics.median(latencies) * 1000, 1)
        figures.p99_ms = round(latencies[int(len(latencies) * 0.99)] * 1000, 1)
        answered_at.sort()
        figures.longest_pause_ms = round(max(b - a for a, b in itertools.pairwise(answered_at)) * 1000, 1)
        figures.load_average = round(os.getloadavg()[0], 1)
        return figures
    finally:
        for process in [*running.values(), whole]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*running.values(), whole]:
            try:
                process.wait(drain + 45)
            except subprocess.TimeoutExpired:
                process.kill()


def report(figures: Figures) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = "none" if not figures.failed else f"{len(figures.failed)}: " + "; ".join(sorted(set(figures.failed)))[:800]
    return f"""# Rolling-update drill

`uv run python bench/rollout.py` on {platform.node()} ({os.cpu_count()} cores), {when}, load average
{figures.load_average}. {figures.replicas} replicas of the groups service (`gatherly run groups`) beside a
`gatherly up`, all sharing the SQLite files and the embedded log; {figures.clients} clients each creating a group and
reading it back in a loop through a balancer that probes `/readyz` every {figures.readiness_period_seconds:g} s (unready
after two failures) and sends each request on a new connection to a ready replica. {figures.rounds} round(s) in which
every replica in turn gets SIGTERM (drain {figures.drain_seconds:g} s) and is replaced by a new process on the same
port.

| measure | figure |
|---|---|
| requests answered | {figures.requests:,} ({figures.writes:,} writes, {figures.reads:,} reads) |
| failed requests | {failed} |
| writes lost / doubled | {figures.writes_missing} / {figures.writes_doubled} |
| latency p50 / p99 | {figures.p50_ms} ms / {figures.p99_ms} ms |
| longest time without any successful answer | {figures.longest_pause_ms} ms |
| SIGTERM → replacement ready, per replica | {", ".join(f"{s:g} s" for s in figures.replacements)} |

Why none fail: a replica turns unready at SIGTERM but keeps serving for the drain time, longer than the balancer
needs to notice (two failed probes); then uvicorn stops accepting and finishes requests in flight. In Kubernetes
the same order comes from preStop (5 s, endpoints catch up) + GATHERLY_SHUTDOWN_DRAIN_SECONDS (10 s) + a 60 s grace
period (deploy/k8s/base/service/deployment.yaml). A client or proxy that keeps connections open to a pod must retry
a request its connection lost before sending it (nginx and Envoy do for idempotent requests).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--drain", type=float, default=2.0)
    parser.add_argument("--readiness-period", type=float, default=0.25)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of writing the report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatherly-rollout-") as workdir:
        figures = asyncio.run(
            drill(
                Path(workdir),
                replicas=args.replicas,
                rounds=args.rounds,
                clients=args.clients,
                drain=args.drain,
                readiness_period=args.readiness_period,
            )
        )
    if args.json:
        print(json.dumps(asdict(figures)))
        return
    REPORT.write_text(report(figures))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
