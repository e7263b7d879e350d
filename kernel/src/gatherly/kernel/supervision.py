"""Supervision: long-running tasks restart with backoff after any error, and readiness says when one stays down."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gatherly.kernel.metrics import WORKER_RESTARTS, WORKERS_DOWN

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 30.0
    # A run that lasted this long counts as healthy: the next failure starts the backoff from `initial` again.
    healthy_after: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * 2 ** max(0, failures - 1))


class _Supervised:
    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self.run_started = 0.0
        self.running = False  # False while waiting out a restart backoff
        # Monotonic time of the first failure of the current crash loop; None while healthy.
        self.down_since: float | None = None

    def recovered(self, now: float, healthy_after: float) -> bool:
        """Whether the run since the last restart has lasted long enough to count as healthy (and say so)."""
        if (
            self.down_since is not None
            and self.run_started > self.down_since
            and now - self.run_started >= healthy_after
        ):
            self.down_since, self.failures = None, 0
        return self.down_since is None


class Supervisor:
    """Runs named coroutines for the life of a service, restarting each after any exception.

        supervisor = Supervisor("groups")
        supervisor.start("relay", relay.run)   # a factory: each restart calls it again
        ...
        await supervisor.check()               # raises while a task has been down over `unready_after`

    A task that returns normally has finished (it was asked to stop) and is not restarted; cancellation
    stops it. A task waiting out a restart backoff is down; once down longer than `unready_after` since its
    first failure, readiness turns red. Its backoff resets only after a run of `backoff.healthy_after`, so a crash
    loop waits ever longer (up to `backoff.maximum`) and stays down; the restart counter and an error log with
    the cause record every failure."""

    def __init__(self, service: str, *, backoff: Backoff | None = None, unready_after: float = 30.0) -> None:
        self.service = service
        self.backoff = backoff or Backoff()
        self.unready_after = unready_after
        self._tasks: dict[str, _Supervised] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Restart nothing from now on (a task waiting out its backoff ends at once)."""
        self._stopping.set()

    def start(self, name: str, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        if name in self._tasks:
            raise ValueError(f"{self.service} already supervises a task named {name!r}")
        state = self._tasks[name] = _Supervised(name)
        return asyncio.create_task(self._run(state, work), name=f"{self.service}: {name}")

    async def _run(self, state: _Supervised, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            state.run_started = time.monotonic()
            state.running = True
            try:
                await work()
                state.down_since = None
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                state.running = False
                now = time.monotonic()
                state.recovered(now, self.backoff.healthy_after)
                state.failures += 1
                if state.down_since is None:
                    state.down_since = now
                delay = self.backoff.delay(state.failures)
                WORKER_RESTARTS.labels(self.service, state.name).inc()
                log.error(
                    "supervised task failed; restarting",
                    service=self.service,
                    task=state.name,
                    cause=repr(error),
                    restart_in_s=round(delay, 3),
                    failures=state.failures,
                    exc_info=error,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return

    def down_too_long(self) -> list[str]:
        """Names of tasks waiting out a restart backoff, in a run of failures that began over `unready_after` s ago."""
        now = time.monotonic()
        down = [
            state.name
            for state in self._tasks.values()
            if not state.recovered(now, self.backoff.healthy_after)
            and state.down_since is not None
            and now - state.down_since > self.unready_after
            # Down means waiting out a restart backoff: a task that failed once and runs again is up, while a
            # crash loop spends nearly all its time in backoffs that double up to `backoff.maximum`.
            and not state.running
        ]
        WORKERS_DOWN.labels(self.service).set(len(down))
        return sorted(down)

    async def check(self) -> None:
        """A readiness check: raises while a task has been down longer than `unready_after`."""
        down = self.down_too_long()
        if down:
            raise RuntimeError(f"background work down for over {self.unready_after:g}s: {', '.join(down)}")
