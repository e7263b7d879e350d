"""CPU per request of the hot reads inside one process, without a server or a client: each endpoint called as an ASGI
app (the gateway and everything behind it) N times, with the process's CPU time measured around the calls, and
optionally a cProfile of one endpoint. Load-independent enough to compare two versions of the request path.

    uv run python bench/asgi_cpu.py [--requests 2000] [--profile 'groups?limit=20']
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from gatherly.app.testing import FAST_SETTINGS, running_gatherly, sign_up

GROUPS = 41


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", default="", help="profile the endpoint whose path contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reads-asgi-") as directory:
        async with running_gatherly(Path(directory), **FAST_SETTINGS) as running:
            person = await sign_up(running, display_name="Bench Person")
            auth = [(b"authorization", f"Bearer {person.access_token}".encode())]
            group_id = ""
            for i in range(GROUPS):
                body = {"name": f"Python Group {i}", "description": "We write python together.", "city": "Berlin"}
                body["location"] = {"lat": 52.52 + i / 1000, "lng": 13.405}  # type: ignore[assignment]
                response = await running.client.post(
                    "/api/groups", json=body, headers=dict([(k.decode(), v.decode()) for k, v in auth])
                )
                assert response.status_code == 201, response.text
                group_id = response.json()["id"]
            await running.settle()
            endpoints = [
                ("/livez", []),
                ("/api/groups?limit=20", []),
                ("/api/groups?near=52.52,13.405&radius_km=50", []),
                ("/api/groups?q=python", []),
                ("/api/users/me", auth),
                ("/api/groups?member=me", auth),
                (f"/api/groups/{group_id}", []),
                (f"/api/groups/{group_id}/members", []),
            ]
            app = running.process
            for path, headers in endpoints:
                for _ in range(50):  # warm caches (statements, tokens)
                    assert await call(app, path, headers) == 200, path
                profiler = cProfile.Profile() if args.profile and args.profile in path else None
                started = time.process_time()
                if profiler:
                    profiler.enable()
                for _ in range(args.requests):
                    await call(app, path, headers)
                if profiler:
                    profiler.disable()
                used = time.process_time() - started
                print(f"{path:55} {used / args.requests * 1000:.3f} ms CPU/request")
                if profiler:
                    pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    asyncio.run(main())
