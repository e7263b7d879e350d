"""Benchmark: what each layer around a read costs, in process and without sockets (issue #9).

A whole `gatherly up` (every service, SQLite, one person, one group) is started in this process and its composed
ASGI app is called directly, so the figures hold neither uvicorn, nor the socket, nor wrk. For each read, the same
server answers in turn:

- `harness`: an ASGI app that answers at once (what calling an app costs this script);
- `/livez`: answered by the gateway's own FastAPI app, behind the front door (security headers, CORS);
- `trivial`: a route answering `{"status": "alive"}` put into the service's router just before the real route (the
  same app, middleware, routers and route class: only the dependencies, the work and the response model differ);
- `trivial + deps`: the same, with the real route's bearer dependency;
- the real route's endpoint, dependencies and response model answering what it answered the first time: what the
  framework costs of that route, without the route's own work (its queries, shaping the answer);
- the real route;
- a ladder: the trivial route entered at each layer of the service's stack in turn (from FastAPI's innermost
  middleware up to the process), so that the difference between two rungs is what one layer costs.

Variants are measured in turn, round after round, so that the machine's other work falls on all of them alike; the
figure is the median over rounds of the loop thread's CPU time per request, less the process's background CPU
(relays, consumers: measured while idle before each round) for the wall time the requests took. With --profile
FILE, cProfile's view of the real routes goes to FILE.

    uv run python bench/request_layers.py [--requests 2000] [--rounds 5] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import io
import os
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatherly.app.testing import FAST_SETTINGS, running_gatherly, sign_up
from gatherly.kernel.auth import CurrentUser, MaybeUser


@dataclass(frozen=True)
class Variant:
    name: str
    app: ASGIApp
    path: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    service: ASGIApp | None = None


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"alive"}'})


async def call(
    app: ASGIApp, path: str, headers: tuple[tuple[bytes, bytes], ...], service: ASGIApp | None = None
) -> int:
    """One GET through `app` as uvicorn would make it; returns the status (the body is read and dropped)."""
    path, _, query = path.partition("?")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8630"), (b"accept", b"*/*"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8630),
        "state": {},
    }
    if service is not None:  # entering below the service's FastAPI app, which would set it
        scope["app"] = service
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def cpu_per_request(variant: Variant, requests: int) -> tuple[float, float]:
    """(the loop thread's CPU seconds, the wall seconds) of `requests` requests. The CPU includes the background
    tasks (relays, consumers), which run wherever a request yields, as they do between requests in a server."""
    started, wall = time.thread_time(), time.perf_counter()
    for _ in range(requests):
        await call(variant.app, variant.path, variant.headers, variant.service)
    return time.thread_time() - started, time.perf_counter() - wall


async def idle_cpu(seconds: float = 1.0) -> float:
    """The process's background CPU per second while no request comes (relays, consumers, probes)."""
    started, wall = time.thread_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.thread_time() - started) / (time.perf_counter() - wall)


async def warm_measure_and_profile(variants: list[Variant], requests: int, rounds: int, profile: Path | None) -> None:
    """Each variant warmed (caches, compiled statements, the token's verification) and required to answer 200, then
    measured (`measure_and_print`); with `profile`, a cProfile of the API routes written there."""
    for variant in variants:
        for _ in range(200):
            status = await call(variant.app, variant.path, variant.headers, variant.service)
        assert status == 200, (variant.name, status)
    await measure_and_print(variants, requests, rounds)
    if profile:
        await profiled(profile, requests, [v for v in variants if v.name.startswith("GET /api")])


async def measure_and_print(variants: list[Variant], requests: int, rounds: int) -> None:
    """Each variant's CPU µs per request, measured in turn round after round, printed as a table."""
    gc.collect()
    gc.freeze()  # as `gatherly up` does (app/server.py): collections do not walk the start-up heap
    # The background's CPU comes in bursts (a relay's lease, a consumer's poll): measured before every
    # round, and the median of those subtracted afterwards.
    idles: list[float] = []
    raw: dict[str, list[tuple[float, float]]] = {v.name: [] for v in variants}
    for _ in range(rounds):
        idles.append(await idle_cpu())
        for variant in variants:
            raw[variant.name].append(await cpu_per_request(variant, requests))
    idle = statistics.median(idles)
    figures = {name: [(cpu - idle * wall) / requests * 1e6 for cpu, wall in runs] for name, runs in raw.items()}

    load = os.getloadavg()
    print(
        f"\n{requests} requests x {rounds} rounds per variant; background CPU {idle * 1e3:.0f} ms/s "
        f"(median of {', '.join(f'{i * 1e3:.0f}' for i in idles)}; subtracted); "
        f"load average {load[0]:.1f} {load[1]:.1f}"
    )
    print("| path | CPU µs/request (median) | rounds |\n|---|---:|---|")
    for name, values in figures.items():
        rounded = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):.0f} | {rounded} |")


def trivial_route(router_routes: list[Any], real: APIRoute, path: str, dependencies: bool) -> None:
    """A route answering a constant at `path`, put just before `real` in its router (so routing walks as far)."""

    if dependencies and "me" in real.path:

        async def endpoint(me: CurrentUser) -> dict[str, str]:
            return {"status": "alive"}

    elif dependencies:

        async def endpoint(caller: MaybeUser) -> dict[str, str]:  # type: ignore[misc]
            return {"status": "alive"}

    else:

        async def endpoint() -> dict[str, str]:  # type: ignore[misc]
            return {"status": "alive"}

    route = real.__class__(path, endpoint, methods=["GET"], response_model=None)
    router_routes.insert(router_routes.index(real), route)


def cached_route(router_routes: list[Any], real: APIRoute, path: str) -> None:
    """The real route's endpoint (its dependencies, its response model) answering what it answered the first time:
    the framework's whole share of the route, without the route's own work (queries, shaping the answer)."""
    first: list[Any] = []

    @functools.wraps(real.endpoint)
    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        if not first:
            first.append(await real.endpoint(*args, **kwargs))
        return first[0]

    route = real.__class__(path, endpoint, methods=["GET"], response_model=real.response_model)
    router_routes.insert(router_routes.index(real), route)


async def main(requests: int, rounds: int, profile: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_gatherly(Path(tmp), **FAST_SETTINGS) as gatherly:
            person = await sign_up(gatherly, display_name="Layers")
            created = await gatherly.client.post("/api/groups", json={"name": "Layer Watchers"}, headers=person.auth)
            assert created.status_code == 201, created.text
            group_id = created.json()["id"]
            await gatherly.settle()
            process = gatherly.process
            bearer = ((b"authorization", f"Bearer {person.access_token}".encode()),)

            users = process.host("users").definition.routers[0]
            groups = process.host("groups").definition.routers[0]
            me_route = next(r for r in users.routes if isinstance(r, APIRoute) and r.path == "/api/users/me")
            group_path = f"{groups.prefix}/{{group}}"
            group_route = next(r for r in groups.routes if isinstance(r, APIRoute) and r.path == group_path)
            # Wherever the app keeps the real route: in its own router, or in the service's included one.
            users_routes = next(
                routes for routes in (process.host("users").app.router.routes, users.routes) if me_route in routes
            )
            groups_routes = next(
                routes for routes in (process.host("groups").app.router.routes, groups.routes) if group_route in routes
            )
            trivial_route(users_routes, me_route, "/api/users/me/layers-trivial", dependencies=False)
            trivial_route(users_routes, me_route, "/api/users/me/layers-deps", dependencies=True)
            prefix = groups.prefix
            trivial_route(groups_routes, group_route, f"{prefix}/layers-trivial/{{group}}", dependencies=False)
            trivial_route(groups_routes, group_route, f"{prefix}/layers-deps/{{group}}", dependencies=True)
            cached_route(users_routes, me_route, "/api/users/me/layers-cached")
            cached_route(groups_routes, group_route, f"{prefix}/layers-cached/{{group}}")
            for router in (users, groups):
                router._mark_routes_changed()

            me, cached_group = "/api/users/me", f"{prefix}/layers-cached/{group_id}"
            variants = [
                Variant("harness (an app answering at once)", answer_at_once, "/livez"),
                Variant("GET /livez (front door, gateway's app)", process, "/livez"),
                Variant("users: trivial route", process, "/api/users/me/layers-trivial"),
                Variant("users: trivial route + bearer dependency", process, "/api/users/me/layers-deps", bearer),
                Variant("users: /me's dependencies, response model, answer", process, f"{me}/layers-cached", bearer),
                Variant("GET /api/users/me (bearer)", process, "/api/users/me", bearer),
                Variant("users app alone: trivial route", process.host("users").app, "/api/users/me/layers-trivial"),
                Variant("groups: trivial route", process, f"{prefix}/layers-trivial/{group_id}"),
                Variant("groups: trivial route + MaybeUser", process, f"{prefix}/layers-deps/{group_id}"),
                Variant("groups: the route's dependencies, response model, answer", process, cached_group),
                Variant("GET /api/groups/{id}", process, f"{prefix}/{group_id}"),
            ]
            variants += ladder(process, "/api/users/me/layers-trivial")
            await warm_measure_and_profile(variants, requests, rounds, profile)


def ladder(process: Any, path: str) -> list[Variant]:
    """The trivial route entered at each layer of the stack in turn, from the router up to the process: the
    difference between two rungs is what the layer between them costs."""
    gateway = process.gateway
    service = next(app for prefix, app in gateway.routes if path.startswith(prefix + "/"))
    service.middleware_stack = service.middleware_stack or service.build_middleware_stack()
    layers: list[ASGIApp] = []
    app: Any = service.middleware_stack
    while app is not None:
        layers.append(app)
        # Below it, FastAPI's routes need the exit stack it puts into the scope.
        app = getattr(app, "app", None) if type(app).__name__ != "AsyncExitStackMiddleware" else None
    rungs = [Variant(f"ladder: {type(layer).__name__} down", layer, path, service=service) for layer in layers]
    rungs.append(Variant("ladder: FastAPI app down", service, path))
    rungs.append(Variant("ladder: process (front door, gateway) down", process, path))
    return rungs


async def profiled(path: Path, requests: int, variants: list[Variant]) -> None:
    out = io.StringIO()
    for variant in variants:
        profiler = cProfile.Profile()
        profiler.enable()
        await cpu_per_request(variant, requests)
        profiler.disable()
        out.write(f"\n# {variant.name}\n")
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
    await asyncio.to_thread(path.write_text, out.getvalue())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.profile))
