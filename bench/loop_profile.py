"""What holds the event loop of a started `gatherly up`: CPU and wake-ups per background task, idle and under wrk.

`python bench/loop_profile.py` starts `gatherly up` (asyncio's own loop instead of uvloop, so that each callback can
be timed: uvloop's handles are C objects), waits for its demo data, then times every callback the loop runs — wall
and thread CPU time, by supervised task name (`users: relay`, `groups: consumer groups.profiles`…) or coroutine —
for `--idle` seconds with no requests, and for `--seconds` under wrk (2 threads, 32 connections) against `--path`
when one is given. Prints the tasks by CPU per second and the longest single holds of the loop: a callback that
keeps the loop for long delays every request waiting behind it, which is what a latency tail would come from.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def task_name(handle: asyncio.Handle) -> str:
    """What a callback of asyncio's loop runs for: its task's coroutine, or the callback itself."""
    owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
    if isinstance(owner, asyncio.Task):
        coroutine = owner.get_coro()
        qualname = getattr(coroutine, "__qualname__", repr(coroutine))
        # Supervised tasks are named after the service and the work ("users: relay"); the rest by coroutine.
        return owner.get_name() if qualname.startswith("Supervisor.") else qualname
    return str(getattr(handle._callback, "__qualname__", handle._callback))  # type: ignore[attr-defined]


def serve(stats_file: Path, argv: list[str]) -> None:
    """In the server process: time each callback of asyncio's loop, dump the totals every second, run the CLI."""
    import asyncio.events

    sys.modules["uvloop"] = None  # type: ignore[assignment]  # uvicorn then falls back to asyncio's loop
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    run = asyncio.events.Handle._run

    def timed_run(self: asyncio.Handle) -> None:  # Handle._run's own signature, self included
        wall, cpu = time.perf_counter(), time.thread_time()
        run(self)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        entry = totals[task_name(self)]
        entry[0] += 1
        entry[1] += wall
        entry[2] += cpu
        entry[3] = max(entry[3], wall)
        entry[4] = max(entry[4], cpu)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def dump() -> None:
        while True:
            time.sleep(1)
            stats_file.write_text(json.dumps(dict(totals)))

    threading.Thread(target=dump, daemon=True).start()
    from gatherly.app.cli import main

    sys.argv = ["gatherly", *argv]
    main()


def window(before: dict[str, Any], after: dict[str, Any], seconds: float, top: int) -> list[str]:
    rows = []
    for name, (calls, wall, cpu, *_rest) in after.items():
        was = before.get(name, [0, 0.0, 0.0])
        if calls - was[0]:
            rows.append((cpu - was[2], calls - was[0], wall - was[1], name))
    rows.sort(reverse=True)
    total = sum(row[0] for row in rows)
    lines = [
        f"Loop CPU {total * 1000 / seconds:.1f} ms per second, {sum(r[1] for r in rows) / seconds:.0f} callbacks per "
        "second.",
        "",
        "| task or callback | CPU ms/s | runs/s | CPU µs per run |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{name}` | {cpu * 1000 / seconds:.1f} | {calls / seconds:.1f} | {cpu / calls * 1e6:,.0f} |"
        for cpu, calls, _wall, name in rows[:top]
    ]
    return lines


def longest(after: dict[str, Any], top: int) -> list[str]:
    rows = sorted(((v[4], v[3], k) for k, v in after.items()), reverse=True)[:top]
    lines = ["| task or callback | longest run, CPU ms | longest run, wall ms |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {cpu * 1000:.1f} | {wall * 1000:.1f} |" for cpu, wall, name in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8601)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds measured with no requests")
    parser.add_argument("--path", default="", help="also measure under wrk against this path (e.g. /api/groups)")
    parser.add_argument(
        "--endpoint", default="", help="or against the first of http_bench's endpoints whose name has this (writes too)"
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sources", type=Path, help="serve another checkout's code (e.g. before a change)")
    parser.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(Path(os.environ["LOOP_PROFILE_STATS"]), args.serve)
        return

    import http_bench

    base = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory(prefix="gatherly-loop-") as tmp:
        data_dir, stats = Path(tmp), Path(tmp) / "loop-stats.json"
        env = {**os.environ, "GATHERLY_SHUTDOWN_DRAIN_SECONDS": "0", "LOOP_PROFILE_STATS": str(stats)}
        if args.sources is not None:
            env["PYTHONPATH"] = http_bench.source_path(args.sources)
        command = [sys.executable, __file__, "--serve", "up", "--port", str(args.port), "--data-dir", str(data_dir)]
        with (data_dir / "server.log").open("wb") as log:
            server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            http_bench.wait_until_seeded(base, data_dir, server)
            token, group_id, event_id, image_id = http_bench.seed(base)
            time.sleep(3)  # the seed's events are handled
            before = json.loads(stats.read_text())
            cpu = http_bench.cpu_seconds(server.pid)
            time.sleep(args.idle)
            idle = json.loads(stats.read_text())
            cpu = http_bench.cpu_seconds(server.pid) - cpu
            per_second = cpu * 1000 / args.idle
            print(f"## Idle for {args.idle:.0f} s: the process used {per_second:.1f} ms of CPU per second\n")
            print("\n".join(window(before, idle, args.idle, args.top)))
            if args.path or args.endpoint:
                wrk = http_bench.ensure_wrk()
                command = [wrk, "-t2", "-c32", f"-d{args.seconds}s", "--latency"]
                name = f"GET {args.path}"
                if args.endpoint:
                    endpoint = next(
                        e for e in http_bench.endpoints(group_id, event_id, image_id) if args.endpoint in e.name
                    )
                    name, path = endpoint.name, endpoint.path
                    command += ["-s", str(http_bench.lua_script(endpoint, token, data_dir))]
                else:
                    path = args.path
                cpu = http_bench.cpu_seconds(server.pid)
                output = subprocess.run([*command, base + path], capture_output=True, text=True, check=True).stdout
                cpu = http_bench.cpu_seconds(server.pid) - cpu
                time.sleep(1.5)
                loaded = json.loads(stats.read_text())
                used = cpu * 1000 / args.seconds
                print(f"\n## Under wrk, `{name}`: the process used {used:.1f} ms of CPU per second")
                # Without http_bench's RESULT line: since its slices, it holds wrk's whole latency histogram.
                shown = "\n".join(line for line in output.strip().splitlines() if not line.startswith("RESULT "))
                print(f"\n```\n{shown}\n```\n")
                print("\n".join(window(idle, loaded, args.seconds, args.top)))
            print("\n## Longest single runs of each (since the start: start-up and demo data included)\n")
            print("\n".join(longest(json.loads(stats.read_text()), 10)))
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
