"""Event-loop lag: how late the loop runs a timer, i.e. the longest a coroutine or a statement kept it busy; and the
garbage collector's pauses, which stop the loop too."""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Where `window_worst` is reset: the max gauge shows the worst lag of (at most) the last minute.
WINDOW_S = 60.0
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLagProbe:
    """Fires a timer every `interval` seconds and records how much later than asked it ran.

    Statements on inline SQLite and anything else that blocks the loop show up here as lag. With `services`
    named it is exported as gatherly_event_loop_lag_seconds{,_max,_distribution} under each (services of one process
    share its loop, so one probe measures for all of them); benchmarks read `worst` directly.

    It runs 20 times a second in every process, so a tick is kept to the bare minimum: one timer callback (no task,
    no future), a few comparisons and one bucket count. The metrics are computed when Prometheus scrapes them."""

    def __init__(self, *services: str, interval: float = 0.05) -> None:
        self.services = services
        self.interval = interval
        self.worst = 0.0  # seconds, since start or the last `reset`
        # The worst lag counting only time the loop's thread spent on a CPU (its own work), not time the operating
        # system gave other processes: on a shared machine the two differ a lot.
        self.worst_busy = 0.0
        self.samples = 0
        self.last = 0.0
        self.window_worst = 0.0
        self._window_started = 0.0
        self._counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.lag_sum = 0.0
        self._sampled: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def reset(self) -> None:
        self.worst = self.worst_busy = 0.0
        self.samples = 0

    async def next_sample(self) -> float:
        """Wait for the probe's next measurement; returns `worst`."""
        if self._sampled is None or self._sampled.done():
            self._sampled = asyncio.get_running_loop().create_future()
        await self._sampled
        return self.worst

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._window_started = loop.time()
        for service in self.services:
            _EXPORTED[service] = self
        self._timer = loop.call_later(self.interval, self._tick, loop, loop.time(), time.thread_time())
        try:
            await loop.create_future()  # the timer re-arms itself; this only waits to be cancelled
        finally:
            self._timer.cancel()

    def _tick(self, loop: asyncio.AbstractEventLoop, asked: float, cpu: float) -> None:
        now, cpu_now = loop.time(), time.thread_time()
        lag = max(0.0, now - asked - self.interval)
        if lag > self.worst:
            self.worst = lag
        self.worst_busy = max(self.worst_busy, min(lag, cpu_now - cpu))
        self.samples += 1
        self.last = lag
        if now - self._window_started >= WINDOW_S:
            self._window_started, self.window_worst = now, 0.0
        if lag > self.window_worst:
            self.window_worst = lag
        self._counts[bisect.bisect_left(BUCKETS, lag)] += 1
        self.lag_sum += lag
        if self._sampled is not None and not self._sampled.done():
            self._sampled.set_result(None)
        # Re-armed from the callback itself: one timer handle at a time, kept so that `run` can cancel it.
        self._timer = loop.call_later(self.interval, self._tick, loop, now, cpu_now)

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        totals = itertools.accumulate(self._counts)
        return [(str(bound), float(n)) for bound, n in zip((*BUCKETS, "+Inf"), totals, strict=True)]


# The probe exporting each service's figures (the newest one started for it).
_EXPORTED: dict[str, LoopLagProbe] = {}


class _LoopLagCollector(Collector):
    """gatherly_event_loop_lag_seconds{,_max,_distribution}, read from the probes when scraped."""

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "gatherly_event_loop_lag_seconds", "How late the event loop ran the last lag probe", labels=["service"]
        )
        worst = GaugeMetricFamily(
            "gatherly_event_loop_lag_max_seconds", "Worst event-loop lag seen in the last minute", labels=["service"]
        )
        distribution = HistogramMetricFamily(
            "gatherly_event_loop_lag_seconds_distribution",
            "How late the event loop ran its lag probes",
            labels=["service"],
        )
        for service, probe in sorted(_EXPORTED.items()):
            last.add_metric([service], probe.last)
            worst.add_metric([service], probe.window_worst)
            distribution.add_metric([service], probe.cumulative_buckets(), probe.lag_sum)
        yield from (last, worst, distribution)


REGISTRY.register(_LoopLagCollector())


GC_PAUSE = Histogram(
    "gatherly_gc_pause_seconds",
    "How long each run of the garbage collector stopped the process, per generation",
    ["generation"],
    buckets=BUCKETS,
)
GC_FROZEN = Gauge("gatherly_gc_frozen_objects", "Objects kept out of the garbage collector's reach since start-up")


def time_gc_pauses() -> None:
    """Record every collection's pause in gatherly_gc_pause_seconds (once per process)."""
    if _on_gc_phase not in gc.callbacks:
        gc.callbacks.append(_on_gc_phase)


_gc_started = 0.0


def _on_gc_phase(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _gc_started)


def set_young_collection_threshold(allocations: int) -> None:
    """Collect the young generation every `allocations` allocations instead of CPython's 700 (the older
    generations' thresholds unchanged: each runs after ten of the one below)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(allocations, middle, old)


async def freeze_startup_heap() -> None:
    """Move everything alive once the process has started out of the collector's reach.

    A started process holds some 285,000 objects (apps, schemas, SQLAlchemy metadata, compiled statements) that live
    as long as it does. Each full collection walked all of them: 0.4 s to over a second with the loop stopped on a
    loaded machine. Frozen, a full collection walks only what was made since (gc.freeze's own
    advice for long-lived processes). Garbage is collected first so that none of it is frozen."""
    gc.collect()
    gc.freeze()
    GC_FROZEN.set(gc.get_freeze_count())
