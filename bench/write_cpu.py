"""Benchmark: CPU per PATCH in process, split by task: the request and every consumer and relay it causes (issue #9).

A whole Gatherly (every service, SQLite, embedded log) is started in this process, one person and one group are made,
and `--edits` edits are sent one after another to the composed ASGI app (no socket, no uvicorn), each awaited, then
the loop runs a few turns so the consumers and relays it woke can run, as between requests of one client. Every
callback of the event loop is timed (thread CPU time) and charged to its task: `main` is the requests (and the final
wait for everything to be handled), the others are named after their service and work (`users: relay`,
`groups: consumer groups.profiles`...). Prints the CPU per edit of the whole process and of the top tasks.

One edit at a time, every consumer group applies or skips each event alone; under wrk (bench/loop_profile.py
--endpoint) the loop is saturated and groups read several events per wake-up, so the shares differ.

    uv run python bench/write_cpu.py users|groups [--edits 300] [--rounds 2] [--top 16]

To measure other code (before a change), put its packages first on PYTHONPATH (bench/http_bench.py's
`source_path(checkout)` lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import collections
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gatherly.app.testing import FAST_SETTINGS, running_gatherly, sign_up

sys.path.insert(0, str(Path(__file__).parent))

from loop_profile import task_name  # a sibling script, found once bench/ is on the path

totals: collections.defaultdict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
_run = asyncio.events.Handle._run


def timed_run(self: asyncio.Handle) -> None:  # Handle._run's own signature, self included
    started = time.thread_time()
    _run(self)
    entry = totals[task_name(self)]
    entry[0] += 1
    entry[1] += time.thread_time() - started


asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]


async def patch(app: Any, path: str, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> int:
    """One PATCH through `app` as uvicorn would make it; returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "PATCH",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8630"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8630),
        "state": {},
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main(what: str, edits: int, rounds: int, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_gatherly(Path(tmp), **FAST_SETTINGS) as gatherly:
            person = await sign_up(gatherly, display_name="Writer")
            created = await gatherly.client.post("/api/groups", json={"name": "Write Watchers"}, headers=person.auth)
            assert created.status_code == 201, created.text
            await gatherly.settle()
            bearer = ((b"authorization", f"Bearer {person.access_token}".encode()),)
            # The bodies of bench/http_bench.py's PATCH endpoints, with a number so that every edit changes something.
            if what == "groups":
                path, field, text = f"/api/groups/{created.json()['id']}", "description", "Talks and pairing."
            else:
                path, field, text = "/api/users/me", "bio", "Benchmarking."

            async def run(count: int) -> None:
                for n in range(count):
                    status = await patch(gatherly.process, path, bearer, json.dumps({field: f"{text} {n}"}).encode())
                    assert status == 200, status
                    for _ in range(3):  # the turns a server gives its other tasks between one client's requests
                        await asyncio.sleep(0)

            await run(100)  # warm: caches, compiled statements, the token's verification
            await gatherly.settle()
            gc.collect()
            gc.freeze()  # as `gatherly up` does (app/server.py)
            for number in range(rounds):
                totals.clear()
                started = time.thread_time()
                await run(edits)
                await gatherly.settle()
                cpu = time.thread_time() - started
                print(
                    f"round {number}: {cpu / edits * 1e6:.0f} µs of CPU per edit (whole process), "
                    f"load average {os.getloadavg()[0]:.1f}"
                )
                for name, (runs, task_cpu) in sorted(totals.items(), key=lambda item: -item[1][1])[:top]:
                    print(f"  {task_cpu / edits * 1e6:8.0f} µs/edit  {runs / edits:6.2f} runs/edit  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["users", "groups"])
    parser.add_argument("--edits", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.what, args.edits, args.rounds, args.top))
