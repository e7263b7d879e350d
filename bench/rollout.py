"""Rolling-update drill over the whole distributed stack: `gatherly stack up --replicas 2` runs two processes of
every service behind the nginx gateway (PostgreSQL per service, Kafka, Debezium publishing the outboxes), and every
replica is replaced in turn — SIGTERM, drain, exit, started again, ready, back in the gateway, next — while clients
send a steady mix of reads and writes that touches every service.

Each replica does what a pod does: at SIGTERM its /readyz turns 503 and it keeps serving for
GATHERLY_SHUTDOWN_DRAIN_SECONDS; the stack's supervisor sees the 503, reloads nginx without it (a Kubernetes Service
drops the endpoint), starts the replica again once it has exited (a ReplicaSet), and puts it back in the gateway
once its /readyz answers 200. The drill only sends the SIGTERMs and waits for stack.json to show each replacement
routed before the next (maxUnavailable 0 in spirit: the other replica serves throughout).

Each client has an organiser and a member, a group and an event of their own made before the traffic; in a loop it
creates a group and reads it back (groups), schedules an event in its group and reads it (events), RSVPs to it as
the member (events; the notifications service hears of it through Kafka), asks for an upload slot and reads it
(images), reads the organiser's profile (users) and the member's inbox (notifications). A request fails on a
transport error or any answer but the expected one. Afterwards the effects are checked: every group, event and
upload slot a client was told about exists exactly once, and the member was told of each RSVP exactly once (the
rsvp.changed event handled once). Latencies are split into before the first SIGTERM and during the rollout.

    uv run python bench/rollout.py [--port 8610] [--data-dir /tmp/rollout] [--database-url TEMPLATE]
                                   [--replicas 2] [--clients 4] [--before 60] [--attach] [--json]

Without --attach it starts the stack (and stops it at the end); with --attach it uses the one running from
--data-dir. Writes a dated section at the top of bench/reports/rollout.md unless --json (then prints the figures).
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
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from gatherly.app.stack import StackState, alive
from gatherly.app.testing import Person, sign_up

REPORT = Path(__file__).parent / "reports" / "rollout.md"
# Password hashing at its cheapest: sign-ups are set-up here, not what is measured.
CHEAP_HASHES = {
    "GATHERLY_PASSWORD_TIME_COST": "1",
    "GATHERLY_PASSWORD_MEMORY_KIB": "8",
    "GATHERLY_PASSWORD_PARALLELISM": "1",
}
# The clients sign in once and the drill lasts longer than the default 15-minute access token (and 30-minute upload
# slot, looked up afterwards): both outlive it, so no request is refused for a reason the rollout did not cause.
LONG_LIVED = {"GATHERLY_ACCESS_TOKEN_TTL_SECONDS": "14400", "GATHERLY_IMAGE_UPLOAD_TTL_SECONDS": "14400"}
REPLACEMENT_S = 900.0  # a replica's import, start and first probes on a two-core machine under load
EFFECTS_S = 300.0  # for the last RSVPs to reach the notifications service through Debezium and Kafka


@dataclass
class Figures:
    replicas: int
    clients: int
    requests: int = 0
    by_service: dict[str, int] = field(default_factory=dict)
    writes: int = 0
    reads: int = 0
    failed: list[str] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)  # answered as written, but missing afterwards
    doubled: dict[str, int] = field(default_factory=dict)  # present more than once
    rsvp_notifications: int = 0
    before: dict[str, float] = field(default_factory=dict)  # latency percentiles (ms) and requests/s
    during: dict[str, float] = field(default_factory=dict)
    longest_pause_ms: float = 0.0
    replacements: list[str] = field(default_factory=list)  # "<service> #<n>: <s> s" SIGTERM → the new one routed
    drains: list[str] = field(default_factory=list)  # "<service> #<n>: <s> s" SIGTERM → the old process finished
    rollout_seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)  # at the start and at the end


@dataclass
class Sample:
    started: float
    seconds: float


@dataclass
class Traffic:
    """What the clients did: every answered request's latency, and what they were told was written."""

    figures: Figures
    samples: list[Sample] = field(default_factory=list)
    groups: dict[str, set[str]] = field(default_factory=dict)  # organiser's user id → names of groups made
    events: dict[str, set[str]] = field(default_factory=dict)  # group id → ids of events scheduled
    rsvps: set[str] = field(default_factory=set)  # event ids the member said yes to
    uploads: dict[str, set[str]] = field(default_factory=dict)  # organiser's user id → upload slot ids
    deleted_uploads: set[str] = field(default_factory=set)  # slots whose deletion was answered 204

    async def call(
        self, client: httpx.AsyncClient, method: str, path: str, expect: int, *, write: bool, **kwargs: Any
    ) -> dict[str, Any] | None:
        """One request; its answer's JSON when it is the expected one, else None (and it is a failure)."""
        service = path.split("/")[2]
        self.figures.requests += 1
        self.figures.by_service[service] = self.figures.by_service.get(service, 0) + 1
        if write:
            self.figures.writes += 1
        else:
            self.figures.reads += 1
        started = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            self.figures.failed.append(f"{method} {path}: {type(error).__name__} {error}")
            return None
        if response.status_code != expect:
            self.figures.failed.append(f"{method} {path}: {response.status_code} {response.text[:160]}")
            return None
        self.samples.append(Sample(started, time.monotonic() - started))
        return response.json() if response.content else {}


@dataclass
class Pair:
    """A client's people and the group and event they were given before the traffic."""

    organiser: Person
    member: Person
    group_id: str


def event_body(group_id: str, title: str) -> dict[str, Any]:
    starts = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    return {
        "group_id": group_id,
        "title": title,
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "timezone": "Europe/Berlin",
        "venue": {"name": "Tiergarten", "address": "Strasse des 17. Juni"},
    }


async def eventually(attempt: Any, what: str, timeout: float = 300.0) -> httpx.Response:
    """Set-up steps wait for what other services learn through Kafka (the events service of a new group)."""
    deadline = time.monotonic() + timeout
    while True:
        response: httpx.Response = await attempt()
        if response.is_success:
            return response
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: still {response.status_code} {response.text[:300]} after {timeout:g}s")
        await asyncio.sleep(0.5)


async def prepare_pair(client: httpx.AsyncClient, mail_dir: Path, number: int) -> Pair:
    running = SimpleNamespace(client=client, mail_dir=mail_dir)
    organiser = await sign_up(running, display_name=f"Organiser {number}", mail_timeout=300)  # type: ignore[arg-type]
    member = await sign_up(running, display_name=f"Member {number}", mail_timeout=300)  # type: ignore[arg-type]
    group = await client.post("/api/groups", json={"name": f"Home {number}"}, headers=organiser.auth)
    group.raise_for_status()
    group_id = group.json()["id"]
    joined = await client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=member.auth)
    joined.raise_for_status()
    # The events service learns of the group, its organiser and its member from the groups service's events.
    first = await eventually(
        lambda: client.post("/api/events", json=event_body(group_id, "Warm-up"), headers=organiser.auth),
        "the events service learnt the group",
    )
    rsvp = {"response": "yes", "guests": 0}
    await eventually(
        lambda: client.put(f"/api/events/{first.json()['id']}/rsvp", json=rsvp, headers=member.auth),
        "the events service learnt the membership",
    )
    return Pair(organiser, member, group_id)


async def run_client(number: int, url: str, pair: Pair, traffic: Traffic, stop: asyncio.Event) -> None:
    """The steady mix, one request after the other, each on a new connection to the gateway."""
    organiser, member = pair.organiser.auth, pair.member.auth
    traffic.groups.setdefault(pair.organiser.user_id, set())
    traffic.events.setdefault(pair.group_id, set())
    traffic.uploads.setdefault(pair.organiser.user_id, set())
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=60.0) as client:
        for n in itertools.count():
            if stop.is_set():
                return
            call = traffic.call
            name = f"Drill {number}-{n}"
            if group := await call(
                client, "POST", "/api/groups", 201, write=True, json={"name": name}, headers=organiser
            ):
                traffic.groups[pair.organiser.user_id].add(name)
                await call(client, "GET", f"/api/groups/{group['id']}", 200, write=False, headers=member)
            body = event_body(pair.group_id, name)
            if event := await call(client, "POST", "/api/events", 201, write=True, json=body, headers=organiser):
                traffic.events[pair.group_id].add(event["id"])
                await call(client, "GET", f"/api/events/{event['id']}", 200, write=False, headers=member)
                rsvp = {"response": "yes", "guests": 0}
                path = f"/api/events/{event['id']}/rsvp"
                if await call(client, "PUT", path, 200, write=True, json=rsvp, headers=member) is not None:
                    traffic.rsvps.add(event["id"])
            slot = {"purpose": "event_cover", "content_type": "image/jpeg", "size_bytes": 120_000}
            if upload := await call(
                client, "POST", "/api/images/uploads", 201, write=True, json=slot, headers=organiser
            ):
                image_id = upload["image_id"] if "image_id" in upload else upload["id"]
                traffic.uploads[pair.organiser.user_id].add(image_id)
                await call(client, "GET", f"/api/images/{image_id}", 200, write=False, headers=organiser)
                # Give the slot back: a person may hold only so many open slots (429 after that, by design).
                if (
                    await call(client, "DELETE", f"/api/images/{image_id}", 204, write=True, headers=organiser)
                    is not None
                ):
                    traffic.deleted_uploads.add(image_id)
            await call(client, "GET", "/api/users/me", 200, write=False, headers=organiser)
            await call(client, "GET", "/api/notifications", 200, write=False, headers=member, params={"limit": 20})


async def pages(client: httpx.AsyncClient, path: str, auth: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await client.get(path, params=query, headers=auth)
        page.raise_for_status()
        items += page.json()["items"]
        cursor = page.json().get("next_cursor")
        if not cursor:
            return items


async def check_effects(client: httpx.AsyncClient, pairs: list[Pair], traffic: Traffic) -> None:
    """Every write a client was told of is there exactly once; every RSVP was told to its member exactly once."""
    figures = traffic.figures
    lost = dict.fromkeys(("groups", "events", "uploads", "rsvp notifications"), 0)
    doubled = dict(lost)
    for pair in pairs:
        groups = [g["name"] for g in await pages(client, "/api/groups", pair.organiser.auth, member="me")]
        drill = [name for name in groups if name.startswith("Drill ")]
        lost["groups"] += len(traffic.groups[pair.organiser.user_id] - set(drill))
        doubled["groups"] += len(drill) - len(set(drill))
        events = [e["id"] for e in await pages(client, "/api/events", pair.organiser.auth, group_id=pair.group_id)]
        lost["events"] += len(traffic.events[pair.group_id] - set(events))
        doubled["events"] += len(events) - len(set(events))
        for image_id in traffic.uploads[pair.organiser.user_id]:
            image = await client.get(f"/api/images/{image_id}", headers=pair.organiser.auth)
            # A slot whose deletion was answered 204 must be gone; one whose deletion failed must still be there.
            expected = 404 if image_id in traffic.deleted_uploads else 200
            lost["uploads"] += image.status_code != expected
    # The notifications service hears of RSVPs through Kafka: wait until every one has arrived (or time is up).
    deadline = time.monotonic() + EFFECTS_S
    while True:
        told: list[str] = []
        for pair in pairs:
            inbox = await pages(client, "/api/notifications", pair.member.auth)
            told += [n["link"].rsplit("/", 1)[-1] for n in inbox if n["kind"] == "rsvp_confirmed"]
        missing = traffic.rsvps - set(told)
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(2.0)
    figures.rsvp_notifications = len([t for t in told if t in traffic.rsvps])
    lost["rsvp notifications"] = len(missing)
    doubled["rsvp notifications"] = figures.rsvp_notifications - len(set(told) & traffic.rsvps)
    figures.lost, figures.doubled = lost, doubled


def percentiles(samples: list[Sample], seconds: float) -> dict[str, float]:
    latencies = sorted(s.seconds for s in samples)
    if not latencies:
        return {"requests": 0}
    return {
        "requests": len(latencies),
        "per_second": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p90_ms": round(latencies[int(len(latencies) * 0.90)] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
    }


def replica_components(data_dir: Path) -> list[tuple[str, int]]:
    state = StackState.load(data_dir)
    if state is None or not state.ready:
        raise RuntimeError(f"no ready stack runs from {data_dir}")
    return [(c.name, c.replica) for c in state.components if c.replica is not None]


async def replace(data_dir: Path, service: str, number: int) -> float:
    """SIGTERM to one replica; return once its successor runs and the gateway sends to it."""
    state = StackState.load(data_dir)
    assert state is not None
    old = next(c for c in state.components if (c.name, c.replica) == (service, number))
    assert old.pid is not None
    terminated = time.monotonic()
    os.kill(old.pid, signal.SIGTERM)
    while True:
        await asyncio.sleep(0.2)
        state = StackState.load(data_dir)
        if state is None:
            raise RuntimeError("the stack stopped during the rollout")
        new = next(c for c in state.components if (c.name, c.replica) == (service, number))
        if new.pid != old.pid and new.routed and not alive(old.pid):
            return time.monotonic() - terminated
        if time.monotonic() - terminated > REPLACEMENT_S:
            raise RuntimeError(f"{service} #{number} not replaced within {REPLACEMENT_S:g}s")


async def drill(url: str, data_dir: Path, *, clients: int, before: float, after: float) -> Figures:
    replicas = replica_components(data_dir)
    counts = {name: sum(1 for n, _ in replicas if n == name) for name, _ in replicas}
    if min(counts.values()) < 2:
        raise RuntimeError(f"the drill needs two replicas of each service; the stack runs {counts}")
    figures = Figures(replicas=min(counts.values()), clients=clients, load_average=[round(os.getloadavg()[0], 1)])
    traffic = Traffic(figures)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        pairs = list(await asyncio.gather(*(prepare_pair(client, data_dir / "mail", n) for n in range(clients))))
        stop = asyncio.Event()
        workers = [asyncio.create_task(run_client(n, url, pair, traffic, stop)) for n, pair in enumerate(pairs)]
        started = time.monotonic()
        await asyncio.sleep(before)  # the latency before the rollout
        rollout_started = time.monotonic()
        for service, number in replicas:
            seconds = await replace(data_dir, service, number)
            figures.replacements.append(f"{service} #{number}: {seconds:.1f} s")
            print(f"replaced {service} #{number} in {seconds:.1f} s", file=sys.stderr, flush=True)
        rollout_ended = time.monotonic()
        await asyncio.sleep(after)
        stop.set()
        await asyncio.gather(*workers)
        figures.rollout_seconds = round(rollout_ended - rollout_started, 1)
        figures.before = percentiles(
            [s for s in traffic.samples if s.started < rollout_started], rollout_started - started
        )
        figures.during = percentiles(
            [s for s in traffic.samples if rollout_started <= s.started < rollout_ended],
            rollout_ended - rollout_started,
        )
        answered = sorted(s.started + s.seconds for s in traffic.samples)
        figures.longest_pause_ms = round(max(b - a for a, b in itertools.pairwise(answered)) * 1000, 1)
        await check_effects(client, pairs, traffic)
    figures.drains = drain_times(data_dir, replicas)
    figures.load_average.append(round(os.getloadavg()[0], 1))
    return figures


def drain_times(data_dir: Path, replicas: list[tuple[str, int]]) -> list[str]:
    """Each replica's drain, from its log: SIGTERM ("draining before shutdown") to uvicorn's "Finished server
    process" (the drain time, then the requests in flight and the handlers)."""
    drains = []
    for service, number in replicas:
        log = data_dir / "logs" / (f"{service}.log" if number == 1 else f"{service}-{number}.log")
        began: datetime | None = None
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue  # not one of structlog's JSON lines
            if entry.get("event") == "draining before shutdown":
                began = at
            elif began is not None and str(entry.get("event", "")).startswith("Finished server process"):
                drains.append(f"{service} #{number}: {(at - began).total_seconds():.1f} s")
                began = None
    return drains


def gatherly(*arguments: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "gatherly.app", *arguments], check=True, env=env)


def report(figures: Figures, command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # Counted by method, path and status (or error): answer bodies (nginx's HTML) would break the table.
    kinds = Counter(" ".join(failure.split()[:3]) for failure in figures.failed)
    failed = (
        "none"
        if not figures.failed
        else f"{len(figures.failed)}: " + "; ".join(f"{n} of {kind}" for kind, n in kinds.most_common(8))
    )
    services = ", ".join(f"{name} {count:,}" for name, count in sorted(figures.by_service.items()))

    def row(name: str) -> str:
        before, during = figures.before.get(name, "-"), figures.during.get(name, "-")
        return f"| {name.replace('_', ' ')} | {before} | {during} |"

    latency = "\n".join(row(name) for name in ("requests", "per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
    effects = "\n".join(f"| {kind} | {figures.lost[kind]} | {figures.doubled[kind]} |" for kind in figures.lost)
    return f"""## {when}: the whole distributed stack, {figures.replicas} replicas of every service

`{command}` on {platform.node()} ({os.cpu_count()} cores), load average {figures.load_average[0]} at the start
and {figures.load_average[-1]} at the end. `gatherly stack up --replicas {figures.replicas}`: PostgreSQL (a database
per service), Kafka, Kafka Connect with Debezium publishing every outbox, SeaweedFS, the SMTP sink, two
`gatherly run <service>` processes of each of the five services and nginx in front. {figures.clients} clients, each
with an organiser and a member, in a loop: create a group and read it, schedule an event and read it, RSVP to it
as the member, ask for an upload slot, read it and give it back, read the organiser's profile and the member's inbox;
every request on a new connection through the gateway. After {figures.before.get("requests", 0):,} answered requests of
warm-up, the drill sent SIGTERM to each of the {len(figures.replacements)} replicas in turn and waited until its
successor was ready and routed before the next ({figures.rollout_seconds:g} s in all).

| measure | figure |
|---|---|
| requests | {figures.requests:,} ({figures.writes:,} writes, {figures.reads:,} reads; {services}) |
| failed requests | {failed} |
| RSVPs told to their member (rsvp.changed through Debezium and Kafka) | {figures.rsvp_notifications:,} |
| longest time without any successful answer | {figures.longest_pause_ms:g} ms |
| SIGTERM → successor routed, per replica | {"; ".join(figures.replacements)} |
| SIGTERM → old process finished (drain), per replica | {"; ".join(figures.drains) or "-"} |

Effects afterwards (each write the client was told of, looked up through the API):

| kind | lost | doubled |
|---|---|---|
{effects}

Latency of the answered requests (ms), before the first SIGTERM and during the rollout:

| measure | before | during |
|---|---|---|
{latency}

How no request fails: at SIGTERM a replica's `/readyz` answers 503 while it goes on serving for
`GATHERLY_SHUTDOWN_DRAIN_SECONDS` (10 s in the stack); the stack's supervisor probes every replica's `/readyz` every
0.5 s, marks an unready one `down` in nginx's upstream and reloads nginx (new workers without it; the old ones finish
their requests); only then does the replica stop accepting connections and finish what is in flight. Its successor
is started on the same port once it has exited and is put back into the upstream when its `/readyz` answers 200.
nginx's passive health (`max_fails`, `proxy_next_upstream`) is the second line: a request whose connection failed
before it was sent goes to the other replica, and so does an idempotent one answered 502/503.

"""


def write_report(section: str) -> None:
    previous = REPORT.read_text() if REPORT.exists() else ""
    title, _, rest = previous.partition("\n")
    if title.startswith("# "):
        REPORT.write_text(f"{title}\n\n{section}{rest.lstrip()}")
    else:
        REPORT.write_text(f"# Rolling-update drill\n\n{section}{previous}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8610, help="the gateway's port")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/gatherly-rollout"))
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://gatherly:gatherly@127.0.0.1:5432/rollout_{service}"
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--before", type=float, default=60.0, help="seconds of traffic before the first SIGTERM")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of traffic after the last replacement")
    parser.add_argument("--attach", action="store_true", help="use the stack running from --data-dir")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of writing the report")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    if not args.attach:
        arguments = ["--port", str(args.port), "--data-dir", str(args.data_dir), "--database-url", args.database_url]
        env = {**os.environ, **CHEAP_HASHES, **LONG_LIVED}
        gatherly("stack", "up", "--detach", "--replicas", str(args.replicas), *arguments, env=env)
    try:
        state = StackState.load(args.data_dir)
        url = state.url.replace("localhost", "127.0.0.1") if state else url
        figures = asyncio.run(drill(url, args.data_dir, clients=args.clients, before=args.before, after=args.after))
    finally:
        if not args.attach:
            gatherly("stack", "down", "--data-dir", str(args.data_dir))
    (args.data_dir / "figures.json").write_text(json.dumps(asdict(figures)))  # kept with the run's logs
    if args.json:
        print(json.dumps(asdict(figures)))
        return
    write_report(report(figures, "uv run python bench/rollout.py " + " ".join(sys.argv[1:])))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
