"""OpenTelemetry traces, off unless configured: one trace follows a request through its unit of work, the outbox
(W3C `traceparent`/`tracestate` stored with each row and sent as message headers), the relay's publish and every
consumer's handling, in whichever service.

While tracing is off (`OTEL_TRACES_EXPORTER` unset or `none`, the default) every helper here returns after one
check of a module global: the request path pays nothing else (docs/request-path.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from starlette.types import Scope

# The exporters `OTEL_TRACES_EXPORTER` may name (comma-separated, as the OpenTelemetry spec allows).
EXPORTERS = ("none", "otlp", "console")
# What this module reads from the environment (docs/operations.md lists each; a test checks it). The OTLP
# exporter reads its own OTEL_EXPORTER_OTLP_* variables, and Resource reads OTEL_SERVICE_NAME/OTEL_RESOURCE_ATTRIBUTES.
ENVIRONMENT = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
)
# A traceparent is 55 characters; W3C asks that at least 512 characters of tracestate be carried. Longer values
# from a caller are dropped unread rather than parsed.
MAX_TRACEPARENT = 128
MAX_TRACESTATE = 512

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING: AbstractContextManager[None] = nullcontext()
# None while tracing is off: the one thing every helper looks at first.
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


class UnknownExporter(ValueError):
    """`OTEL_TRACES_EXPORTER` names an exporter this build does not have."""


def configure_from_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Start tracing if `OTEL_TRACES_EXPORTER` asks for it (`otlp`: OTLP over HTTP/protobuf to
    `OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318; `console`: spans printed to stdout).
    Unset or `none`: nothing is set up and nothing is exported."""
    names = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "none").lower().split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise UnknownExporter(f"OTEL_TRACES_EXPORTER={unknown[0]!r}: one of {', '.join(EXPORTERS)}")
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    if not exporters:
        return
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the sampler comes from OTEL_TRACES_SAMPLER.
    provider = TracerProvider(resource=Resource.create({"service.name": "gatherly"}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    enable(provider)


def enable(provider: TracerProvider) -> None:
    """Trace into `provider` from now on (tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("gatherly")


def disable() -> None:
    """Stop tracing; spans still buffered are exported first."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def _context_from(traceparent: str | None, tracestate: str | None) -> otel_context.Context | None:
    """The remote parent named by W3C headers; None when absent, too long or malformed (then ignored)."""
    if not traceparent or len(traceparent) > MAX_TRACEPARENT:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate and len(tracestate) <= MAX_TRACESTATE:
        carrier["tracestate"] = tracestate
    extracted = _PROPAGATOR.extract(carrier)
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def _headers_of(span: Span) -> tuple[str | None, str | None]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate")


def current_headers() -> tuple[str | None, str | None]:
    """(traceparent, tracestate) of the active span, to store with an outbox row; (None, None) when off or idle."""
    if _tracer is None:
        return None, None
    span = trace.get_current_span()
    return _headers_of(span) if span.get_span_context().is_valid else (None, None)


# --- HTTP (kernel/web.py's RequestContextMiddleware) --------------------------------------------------------------


class ServerSpan:
    """The span of one HTTP request, current while the app handles it; `end` names it after the matched route."""

    def __init__(self, tracer: Tracer, scope: Scope, service: str) -> None:
        traceparent = tracestate = None
        for key, value in scope["headers"]:
            if key == b"traceparent":
                traceparent = value.decode("latin-1")
            elif key == b"tracestate":
                tracestate = value.decode("latin-1")
        self.method = scope["method"]
        self.span = tracer.start_span(
            self.method,
            context=_context_from(traceparent, tracestate),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"], "gatherly.service": service},
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def end(self, route: str, status: int) -> None:
        """`route`: the path template matched ("" when none did)."""
        otel_context.detach(self._token)
        if route:
            self.span.update_name(f"{self.method} {route}")
            self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


def server_span(scope: Scope, service: str) -> ServerSpan | None:
    """A started request span, or None while tracing is off."""
    return None if _tracer is None else ServerSpan(_tracer, scope, service)


# --- the unit of work, the relay, the consumers ------------------------------------------------------------------


@contextmanager
def _current(span: Span) -> Iterator[Span]:
    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield span


def unit_of_work(name: str) -> AbstractContextManager[Any]:
    """A span around a transaction, only inside a trace (a transaction of background work starts none)."""
    if _tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return _NOTHING
    return _current(_tracer.start_span(name, attributes={"db.operation.name": "transaction"}))


class Publishing:
    """Producer spans for a batch of outbox rows about to be published, each a child of its row's stored context."""

    def __init__(self, tracer: Tracer, service: str, rows: Sequence[Any]) -> None:
        self.spans = [
            tracer.start_span(
                f"publish {row.aggregatetype}",
                context=_context_from(row.traceparent, row.tracestate),
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": row.aggregatetype,
                    "messaging.message.id": row.id,
                    "gatherly.service": service,
                },
            )
            for row in rows
        ]

    def headers(self) -> list[tuple[str | None, str | None]]:
        """Each message's trace headers: its publish span's, so consumers become the publish's children."""
        return [_headers_of(span) for span in self.spans]

    def end(self, error: BaseException | None = None) -> None:
        for span in self.spans:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR))
            span.end()


def publishing(service: str, rows: Sequence[Any]) -> Publishing | None:
    return None if _tracer is None else Publishing(_tracer, service, rows)


def handling(
    group: str, message_type: str, traceparent: str | None, tracestate: str | None
) -> AbstractContextManager[Any]:
    """The span of a consumer applying one message, a child of the context its headers carry; current meanwhile, so
    events the handler publishes continue the trace."""
    if _tracer is None:
        return _NOTHING
    span = _tracer.start_span(
        f"{group} process {message_type}",
        context=_context_from(traceparent, tracestate),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.operation.type": "process", "messaging.consumer.group.name": group},
    )
    return _current(span)


# --- logs ----------------------------------------------------------------------------------------------------------


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: `trace_id` and `span_id` of the active span, so a log line can be found from its trace."""
    if _tracer is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event["trace_id"] = format(context.trace_id, "032x")
            event["span_id"] = format(context.span_id, "016x")
    return event
