"""Tracing is configured by OpenTelemetry's environment variables, off by default, and each variable is documented."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from gatherly.contracts.users import UserDeleted
from gatherly.kernel import tracing
from gatherly.kernel.messages import Envelope


@pytest.fixture(autouse=True)
def tracing_off_afterwards() -> Iterator[None]:
    yield
    tracing.disable()


def test_nothing_is_traced_or_stored_by_default() -> None:
    tracing.configure_from_environment({})
    assert not tracing.enabled()
    assert tracing.current_headers() == (None, None)
    assert tracing.server_span({"headers": [], "method": "GET", "path": "/"}, "groups") is None
    assert tracing.publishing("groups", []) is None


def test_the_otlp_exporter_is_set_up_when_asked_for() -> None:
    tracing.configure_from_environment(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    )
    assert tracing.enabled()
    assert isinstance(tracing._provider, TracerProvider)


def test_an_unknown_exporter_is_refused_naming_the_choices() -> None:
    with pytest.raises(tracing.UnknownExporter, match=r"zipkin.*none, otlp, console"):
        tracing.configure_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.enabled()


def test_the_active_span_context_goes_into_a_published_envelope() -> None:
    tracing.enable(TracerProvider())
    assert tracing._tracer is not None
    now = datetime.now(UTC)
    with tracing._tracer.start_as_current_span("request") as span:
        envelope = Envelope.wrap(UserDeleted(user_id="u-1", deleted_at=now), now)
    context = span.get_span_context()
    assert (envelope.traceparent or "").startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert envelope.to_message().headers["traceparent"] == envelope.traceparent
    # Outside any span nothing is stored.
    assert Envelope.wrap(UserDeleted(user_id="u-1", deleted_at=now), now).traceparent is None


def test_every_variable_tracing_reads_is_documented_in_operations_md() -> None:
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    missing = [name for name in tracing.ENVIRONMENT if f"`{name}`" not in operations]
    assert not missing, f"missing from docs/operations.md: {missing}"
