"""Prometheus metrics the kernel records for every service (labelled by service, so one process can host all)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RELAYED = Counter("gatherly_outbox_relayed_total", "Outbox rows published to the log", ["service"])
HANDLED = Counter("gatherly_messages_handled_total", "Messages applied by a consumer", ["consumer", "outcome"])
HANDLE_LATENCY = Histogram(
    "gatherly_message_latency_seconds",
    "From the event's commit to the end of its handling",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEAD_LETTERS = Counter("gatherly_dead_letters_total", "Messages parked on a dead-letter topic", ["consumer", "topic"])
HTTP_REQUESTS = Counter("gatherly_http_requests_total", "HTTP requests", ["service", "method", "status"])
HTTP_LATENCY = Histogram("gatherly_http_request_seconds", "HTTP request duration", ["service", "method"])
