"""CPU per request with tracing off and on: the request middleware alone, then reads and writes through a whole
in-process Gatherly (relay and consumers included), rounds alternated so both share the machine's load.

    uv run python bench/tracing_cost.py [--requests 300] [--rounds 3] [--report bench/reports/tracing.md]

"On" is the SDK with a batch processor and an exporter that drops the spans (no network): the cost of making
spans, not of sending them."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gatherly.app.testing import FAST_SETTINGS, running_gatherly, sign_up
from gatherly.kernel import tracing
from gatherly.kernel.web import RequestContextMiddleware


class Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracing_on() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    tracing.enable(provider)


async def middleware_us(calls: int) -> float:
    """µs of CPU per request through RequestContextMiddleware around an app that answers at once."""

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = RequestContextMiddleware(answer, service="bench")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: Any) -> None:
        return None

    started = time.process_time()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / calls * 1e6


async def gatherly_ms(requests: int, data_dir: Path) -> dict[str, float]:
    """ms of the process's CPU per request, for a read and for a write (settled: relay and consumers included)."""
    async with running_gatherly(data_dir, ["users", "groups", "events"], **FAST_SETTINGS) as running:
        person = await sign_up(running)
        await running.settle(timeout=60)
        created = await running.client.post("/api/groups", json={"name": "Bench"}, headers=person.auth)
        group_id = created.json()["id"]
        await running.settle(timeout=60)
        client = running.client

        async def read(i: int) -> None:
            assert (await client.get(f"/api/groups/{group_id}")).status_code == 200

        async def write(i: int) -> None:
            response = await client.patch(f"/api/groups/{group_id}", json={"description": f"d{i}"}, headers=person.auth)
            assert response.status_code == 200, response.text

        async def measure(one: Callable[[int], Coroutine[Any, Any, None]], settle: bool) -> float:
            started = time.process_time()
            for i in range(requests):
                await one(i)
            if settle:
                await running.settle(timeout=120)
            return (time.process_time() - started) / requests * 1e3

        await measure(read, False)  # warm up
        return {
            "GET /api/groups/{id}": await measure(read, False),
            "PATCH /api/groups/{id}": await measure(write, True),
        }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    for round_ in range(args.rounds):
        for mode in ("off", "on"):
            if mode == "on":
                tracing_on()
            try:
                rows = {"middleware alone (µs)": await middleware_us(20_000)}
                with tempfile.TemporaryDirectory() as folder:
                    rows |= await gatherly_ms(args.requests, Path(folder))
            finally:
                tracing.disable()
            for name, value in rows.items():
                results[mode].setdefault(name, []).append(value)
            print(round_, mode, {k: round(v, 3) for k, v in rows.items()}, flush=True)
    lines = [
        "# Tracing cost: CPU per request, tracing off and on",
        "",
        f"`uv run python bench/tracing_cost.py --requests {args.requests} --rounds {args.rounds}`; load average at the "
        f"end {os.getloadavg()[0]:.1f} (2 cores shared with other sessions). Medians of the rounds (each value: "
        "off, on).",
        "",
        "| what | off | on | each round (off / on) |",
        "|---|---:|---:|---|",
    ]
    for name in results["off"]:
        off, on = results["off"][name], results["on"][name]
        rounds = ", ".join(f"{a:.3g} / {b:.3g}" for a, b in zip(off, on, strict=True))
        lines.append(f"| {name} | {statistics.median(off):.3g} | {statistics.median(on):.3g} | {rounds} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        args.report.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
