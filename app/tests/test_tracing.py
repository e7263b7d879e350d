"""One trace across services (issue #18): a request's server span, its unit of work, the relay's publish and another
service's consumer share one trace id with the right parents, on every log and database backend; trace ids reach
the log lines; a malformed traceparent from a caller is ignored."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import structlog
from alembic import command
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gatherly.app.logging import configure_logging
from gatherly.app.services import ALL
from gatherly.app.testing import FAST_SETTINGS, RunningGatherly, running_gatherly, sign_up
from gatherly.kernel import tracing
from gatherly.kernel.db import Database, alembic_config
from gatherly.kernel.testing import DB_BACKENDS, LOG_BACKENDS, scratch_database

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


@pytest.fixture(params=[(db, log) for db in DB_BACKENDS for log in LOG_BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
async def traced_gatherly(
    request: pytest.FixtureRequest, tmp_path: Path, spans: InMemorySpanExporter
) -> AsyncIterator[RunningGatherly]:
    database_backend, log_backend = request.param
    overrides: dict[str, Any] = dict(FAST_SETTINGS)
    if log_backend == "kafka":
        overrides |= {"log_backend": "kafka", "kafka_bootstrap_servers": request.getfixturevalue("kafka_bootstrap")}
    # The three services the journey needs (users signs up and logs in, groups takes the POST, events consumes it):
    # five starting on Kafka and PostgreSQL can outlast the start-up timeout on a busy machine.
    services = ["users", "groups", "events"]
    # Joining Kafka consumer groups takes seconds per group; on a busy machine, minutes for all of them.
    startup_timeout = 240 if log_backend == "kafka" else 60
    async with running_gatherly(
        tmp_path / "data", services, database_backend=database_backend, startup_timeout=startup_timeout, **overrides
    ) as running:
        yield running


def _of_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        s for s in exporter.get_finished_spans() if s.context is not None and f"{s.context.trace_id:032x}" == trace_id
    ]


async def _until_handled(exporter: InMemorySpanExporter, name: str, timeout: float) -> None:
    """Wait until the consumer span `name` of the caller's trace has ended (Kafka on a busy machine can take long)."""
    deadline = time.monotonic() + timeout
    while not any(s.name == name for s in _of_trace(exporter, CALLER_TRACE_ID)):
        assert time.monotonic() < deadline, f"no span {name!r} in the trace after {timeout} s"
        await asyncio.sleep(0.05)


def _parent_of(span: ReadableSpan, among: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    (parent,) = [s for s in among if s.context is not None and s.context.span_id == span.parent.span_id]
    return parent


async def test_one_post_is_one_trace_from_the_request_to_a_consumer_in_another_service(
    traced_gatherly: RunningGatherly, spans: InMemorySpanExporter
) -> None:
    running = traced_gatherly
    olga = await sign_up(running, display_name="Olga")
    response = await running.client.post(
        "/api/groups",
        json={"name": "Traced runners"},
        headers={**olga.auth, "traceparent": CALLER_TRACEPARENT, "tracestate": "vendor=opaque"},
    )
    assert response.status_code == 201, response.text
    await _until_handled(spans, "events.groups process group.created", timeout=240)

    trace = _of_trace(spans, CALLER_TRACE_ID)
    (server,) = [s for s in trace if s.kind is SpanKind.SERVER]
    assert server.name == "POST /api/groups"
    assert server.attributes is not None and server.attributes["gatherly.service"] == "groups"
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CALLER_SPAN_ID  # the caller's trace
    (transaction,) = [s for s in trace if s.name == "GroupsUnitOfWork transaction" and _parent_of(s, trace) is server]
    published = [s for s in trace if s.kind is SpanKind.PRODUCER and s.name == "publish group"]
    assert published and all(_parent_of(s, trace) is transaction for s in published)
    # The events service keeps its read model of groups: its consumer's span is the publish's child.
    (handled,) = [s for s in trace if s.kind is SpanKind.CONSUMER and s.name == "events.groups process group.created"]
    assert _parent_of(handled, trace) in published
    # Its transaction, in the events service, is the handling's child.
    assert [s.name for s in trace if s.parent is not None and s.parent.span_id == handled.context.span_id] == [
        "EventsUnitOfWork transaction"
    ]
    # The caller's tracestate travelled with the row and the message.
    assert handled.parent is not None and handled.parent.trace_state.get("vendor") == "opaque"


async def test_a_malformed_traceparent_is_ignored_and_the_request_starts_its_own_trace(
    gatherly: RunningGatherly, spans: InMemorySpanExporter
) -> None:
    wrong_version = f"ff-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"  # ff is forbidden by W3C Trace Context
    for garbage in (
        "garbage",
        "00-" + "f" * 3_000 + "-01",
        f"00-{'0' * 32}-{CALLER_SPAN_ID}-01",
        b"\x00\xff" * 50,
        wrong_version,
    ):
        response = await gatherly.client.get(
            "/api/groups", headers={"traceparent": garbage, "tracestate": "x=" + "y" * 2_000}
        )
        assert response.status_code == 200, response.text
    servers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 5
    assert all(s.parent is None and s.context is not None and s.context.is_valid for s in servers)


async def test_log_lines_carry_the_trace_and_span_ids_of_the_active_span(spans: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        log = structlog.get_logger("test")
        log.info("outside any span")
        assert tracing._tracer is not None
        with tracing._tracer.start_as_current_span("work") as span:
            log.info("inside a span")
        outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    finally:
        structlog.reset_defaults()
    assert "trace_id" not in outside and "span_id" not in outside
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"


@pytest.mark.parametrize("backend", DB_BACKENDS)
async def test_kernel_0002_gives_an_outbox_made_before_it_its_tracestate_column(backend: str, tmp_path: Path) -> None:
    async with scratch_database(backend, tmp_path) as url:
        db = Database(url)
        try:
            await db.migrate(ALL["users"].migrations)  # a new database: the outbox is made with the column
            assert "tracestate" in await _outbox_columns(db)
            config = alembic_config(ALL["users"].migrations, url)
            async with db.engine.begin() as connection:  # back to before kernel_0002: the column goes
                await connection.run_sync(lambda sync: _alembic(command.downgrade, config, sync, "kernel_0001"))
            assert "tracestate" not in await _outbox_columns(db)
            await db.migrate(ALL["users"].migrations)
            assert "tracestate" in await _outbox_columns(db)
        finally:
            await db.dispose()


def _alembic(run: Any, config: Any, connection: Any, revision: str) -> None:
    config.attributes["connection"] = connection
    run(config, revision)


async def _outbox_columns(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        columns = await connection.run_sync(lambda sync: sqlalchemy.inspect(sync).get_columns("outbox"))
    return {column["name"] for column in columns}
