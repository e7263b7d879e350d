"""`gatherly up` with probes for a latency tail, run by bench/tail_probe.py (which see).

Controlled through a file (TAIL_CONTROL): 'start' begins a window, 'stop' ends it and writes TAIL_OUT (JSON). The
probes cost a little per request (a timestamp, a counting wrapper round each request's coroutine) and a thread that
reads the control file every 0.2 s."""

# ruff: noqa: E402, SIM115  (uvloop is blocked and uvicorn patched before the CLI imports them)

import array
import asyncio
import collections
import gc
import json
import os
import socket
import sys
import threading
import time
import types
import weakref
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

CONTROL = os.environ["TAIL_CONTROL"]
OUT = os.environ["TAIL_OUT"]
MODE_ASYNCIO = os.environ.get("TAIL_ASYNCIO") == "1"
SLOW_MS = float(os.environ.get("TAIL_SLOW_MS", "5"))


@dataclass
class Window:
    on: bool = False  # between 'start' and 'stop'
    tick_due: bool = False  # a tick is scheduled and has not run yet
    t0: float = 0.0


@dataclass
class Turn:
    """Where the previous loop turn ended: its wall and thread CPU clock, and how many requests had started."""

    wall: float = 0.0
    cpu: float = 0.0
    started: int = 0


state = Window()
iters_wall = array.array("d")
iters_cpu = array.array("d")
iters_req = array.array("i")
gcs: list[tuple[float, float, int, int]] = []  # (t, dur, gen, collected)
reqs: list[tuple[float, float, float, int, str]] = []  # (t_head, queue, app, steps, path)
sites: collections.Counter[str | None] = collections.Counter()
slow_handles: list[tuple[float, float, float, str]] = []  # (t, wall, cpu, name)
started = [0]
_gc_t = [0.0]
pc, tt = time.perf_counter, time.thread_time
T = TypeVar("T")


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_t[0] = pc()
    elif state.on:
        gcs.append((_gc_t[0], pc() - _gc_t[0], info["generation"], info["collected"]))


gc.callbacks.append(on_gc)

if MODE_ASYNCIO:
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # uvicorn then falls back to asyncio's loop
    import asyncio.events

    sys.path.insert(0, os.path.join(os.environ["TAIL_ROOT"], "bench"))
    from loop_profile import task_name

    _run = asyncio.events.Handle._run

    def timed_run(self: asyncio.Handle) -> None:  # Handle._run's own signature, self included
        w, c = pc(), tt()
        _run(self)
        w2 = pc() - w
        if state.on and w2 * 1000 > SLOW_MS:
            try:
                name = task_name(self)
            except Exception as e:
                name = repr(e)
            slow_handles.append((w, w2, tt() - c, name))

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http import httptools_impl as H

_ohc = H.HttpToolsProtocol.on_headers_complete
# When each request's head was read (its cycle made), for its queue time: weak, so a cycle goes when uvicorn drops it.
head_read_at: weakref.WeakKeyDictionary[H.RequestResponseCycle, float] = weakref.WeakKeyDictionary()


def on_headers_complete(self: H.HttpToolsProtocol) -> None:
    t = pc()
    if state.on and not state.tick_due:
        state.tick_due = True
        asyncio.get_running_loop().call_soon(tick)
    _ohc(self)
    if self.cycle is not None:
        head_read_at[self.cycle] = t


H.HttpToolsProtocol.on_headers_complete = on_headers_complete  # type: ignore[method-assign]


def where(coro: object) -> str | None:
    c = coro
    last = None
    for _ in range(100):
        frame = getattr(c, "cr_frame", None) or getattr(c, "gi_frame", None)
        if frame is not None:
            last = f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}"
        nxt = getattr(c, "cr_await", None) or getattr(c, "gi_yieldfrom", None)
        if nxt is None:
            break
        c = nxt
    return last


@types.coroutine
def counted(coro: Coroutine[Any, Any, T], box: list[int]) -> Generator[Any, Any, T]:
    """Awaits `coro`, counting in `box` how often it suspends (the futures it yields are the event loop's business,
    passed through untouched: hence Any)."""
    send: Any = None
    exc: BaseException | None = None
    while True:
        try:
            fut = coro.throw(exc) if exc is not None else coro.send(send)
        except StopIteration as stop:
            return stop.value
        box[0] += 1
        if state.on:
            sites[where(coro)] += 1
        exc = None
        try:
            send = yield fut
        except BaseException as e:
            exc = e


_run_asgi = H.RequestResponseCycle.run_asgi


async def run_asgi(self: H.RequestResponseCycle, app: ASGI3Application) -> None:
    t0 = pc()
    started[0] += 1
    box = [0]
    await counted(_run_asgi(self, app), box)
    if state.on:
        th = head_read_at.get(self, t0)
        reqs.append((th, t0 - th, pc() - t0, box[0], self.scope.get("path", "")))


H.RequestResponseCycle.run_asgi = run_asgi  # type: ignore[method-assign]

_last = Turn()


def tick() -> None:
    # Scheduled by the first request head read after the previous tick: under load, once per loop iteration.
    state.tick_due = False
    w, c, n = pc(), tt(), started[0]
    iters_wall.append(w - _last.wall)
    iters_cpu.append(c - _last.cpu)
    iters_req.append(n - _last.started)
    _last.wall, _last.cpu, _last.started = w, c, n


def begin(loop: asyncio.AbstractEventLoop) -> None:
    for x in (iters_wall, iters_cpu, iters_req):
        del x[:]
    gcs.clear()
    reqs.clear()
    sites.clear()
    slow_handles.clear()
    state.on = True
    state.t0 = pc()
    if os.environ.get("TAIL_GC_OFF") == "1":
        gc.disable()
    _last.wall, _last.cpu, _last.started = pc(), tt(), started[0]


def end(loop: asyncio.AbstractEventLoop) -> None:
    state.on = False
    gc.enable()
    t0 = state.t0
    data = {
        "t0": t0,
        "t1": pc(),
        "gc_threshold": gc.get_threshold(),
        "gc_counts": gc.get_count(),
        "gen_sizes": [len(gc.get_objects(i)) for i in range(3)],
        "iters_wall": list(iters_wall),
        "iters_cpu": list(iters_cpu),
        "iters_req": list(iters_req),
        "gcs": gcs,
        "reqs": reqs,
        "sites": sites.most_common(40),
        "slow": slow_handles,
        "threads": [t.name for t in threading.enumerate()],
        "native_id": threading.main_thread().native_id,
    }
    with open(OUT + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(OUT + ".tmp", OUT)


def watcher(loop: asyncio.AbstractEventLoop) -> None:
    last = ""
    while True:
        time.sleep(0.2)
        try:
            cmd = open(CONTROL).read().strip()
        except OSError:
            continue
        if cmd != last:
            last = cmd
            if cmd.startswith("start"):
                loop.call_soon_threadsafe(begin, loop)
            elif cmd.startswith("stop"):
                loop.call_soon_threadsafe(end, loop)


# Start the watcher once the loop runs: hook the Process lifespan start via on_started is app-specific; instead
# patch uvicorn.Server.startup.
import uvicorn

_startup = uvicorn.Server.startup


async def startup(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
    threading.Thread(target=watcher, args=(asyncio.get_running_loop(),), daemon=True, name="tail-watcher").start()
    return await _startup(self, sockets)


uvicorn.Server.startup = startup  # type: ignore[method-assign]

from gatherly.app.cli import main

sys.argv = ["gatherly", *sys.argv[1:]]
main()
