"""Event-loop lag: how late the loop runs a timer, i.e. the longest a coroutine or a statement kept it busy."""

from __future__ import annotations

import asyncio
import time

from gatherly.kernel.metrics import LOOP_LAG, LOOP_LAG_HISTOGRAM, LOOP_LAG_MAX

# Where `worst` is reset: the max gauge shows the worst lag of (at most) the last minute.
WINDOW_S = 60.0


class LoopLagProbe:
    """Sleeps `interval` seconds over and over and records how much later than asked it woke up.

    Statements on inline SQLite and anything else that blocks the loop show up here as lag. With `services`
    named it exports gatherly_event_loop_lag_seconds{,_max,_distribution} under each (services of one process share
    its loop, so one probe measures for all of them); benchmarks read `worst` directly."""

    def __init__(self, *services: str, interval: float = 0.05) -> None:
        self.services = services
        self.interval = interval
        self.worst = 0.0  # seconds, since start or the last `reset`
        # The worst lag counting only time the loop's thread spent on a CPU (its own work), not time the operating
        # system gave other processes: on a shared machine the two differ a lot.
        self.worst_busy = 0.0
        self.samples = 0
        self._sampled = asyncio.Event()

    def reset(self) -> None:
        self.worst = self.worst_busy = 0.0
        self.samples = 0

    async def next_sample(self) -> float:
        """Wait for the probe's next measurement; returns `worst`."""
        self._sampled.clear()
        await self._sampled.wait()
        return self.worst

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        window_started = loop.time()
        window_worst = 0.0
        while True:
            asked, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - asked - self.interval)
            self.worst = max(self.worst, lag)
            self.worst_busy = max(self.worst_busy, min(lag, time.thread_time() - cpu))
            self.samples += 1
            if self.services:
                if loop.time() - window_started >= WINDOW_S:
                    window_started, window_worst = loop.time(), 0.0
                window_worst = max(window_worst, lag)
                for service in self.services:
                    LOOP_LAG.labels(service).set(lag)
                    LOOP_LAG_MAX.labels(service).set(window_worst)
                    LOOP_LAG_HISTOGRAM.labels(service).observe(lag)
            self._sampled.set()
