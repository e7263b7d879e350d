"""Prometheus metrics the kernel records for every service (labelled by service, so one process can host all)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from itertools import repeat

from prometheus_client import Counter, Gauge, Histogram

RELAYED = Counter("gatherly_outbox_relayed_total", "Outbox rows published to the log", ["service"])
HANDLED = Counter("gatherly_messages_handled_total", "Messages applied by a consumer", ["consumer", "outcome"])
HANDLE_LATENCY = Histogram(
    "gatherly_message_latency_seconds",
    "From the event's commit to the end of its handling",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(amount)` for each amount, with the same samples: each amount counted in the first bucket
    whose bound is not below it, the sum grown by all of them. `observe` walks the bounds in Python and takes two
    locks per amount; a consumer observes every message it applies (6% of the batch consumer's CPU), so here each
    bucket is found by `bisect` (C), and each bucket hit and the sum are incremented once per call. It uses
    prometheus_client's histogram internals (`_upper_bounds`, `_buckets`, `_sum`): `kernel/tests/test_metrics.py`
    compares its samples with `observe`'s, so a client that changes them fails there. The sum is added as one float,
    so it may differ from the one-by-one sum in the last bits. Amounts are numbers, not NaN (which `observe` counts
    in no bucket). For a histogram without labels or a labelled histogram's child."""
    if not amounts:
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(sum(amounts))
    buckets = histogram._buckets
    # bisect_left: the first bound >= amount, as `observe`'s `amount <= bound`; the last bound is +Inf.
    for index, count in Tally(map(bisect_left, repeat(histogram._upper_bounds), amounts)).items():
        buckets[index].inc(count)


DEAD_LETTERS = Counter("gatherly_dead_letters_total", "Messages parked on a dead-letter topic", ["consumer", "topic"])
# `route` is the matched path template (e.g. /api/groups/{group_id}); "" when no route matched (a 404).
HTTP_REQUESTS = Counter("gatherly_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_LATENCY = Histogram("gatherly_http_request_seconds", "HTTP request duration", ["service", "method", "route"])

# -- outbox relay and loop health (kernel/relay.py, kernel/loop_health.py) --------------------------------------
RELAY_LEADER = Gauge("gatherly_outbox_relay_leader", "1 while this process's relay publishes the outbox", ["service"])
OUTBOX_BACKLOG = Gauge("gatherly_outbox_backlog", "Outbox rows not yet published (leader's view)", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "gatherly_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0 when empty)", ["service"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "gatherly_outbox_publish_failures_total", "Attempts to publish an outbox row that the log refused", ["service"]
)
OUTBOX_HELD_ROWS = Gauge(
    "gatherly_outbox_held_rows", "Outbox rows held back behind an unpublishable row of their aggregate", ["service"]
)
OUTBOX_CLEANED = Counter(
    "gatherly_outbox_cleaned_total", "Outbox rows deleted by the cleanup loop (Debezium mode)", ["service"]
)
# The loop-lag metrics are exported by kernel/loop_health.py's collector (computed when scraped).
WAL_CHECKPOINTS = Counter(
    "gatherly_sqlite_wal_checkpoints_total", "WAL checkpoints run off the event loop", ["database", "outcome"]
)

# --- delivery: supervision, consumer lag, dead letters (issue #7, delivery side) -------------------------------
WORKER_RESTARTS = Counter(
    "gatherly_worker_restarts_total", "Supervised background tasks restarted after an error", ["service", "task"]
)
WORKERS_DOWN = Gauge("gatherly_workers_down", "Supervised tasks down longer than the readiness threshold", ["service"])
CONSUMER_LAG = Gauge(
    "gatherly_consumer_lag", "Records on a partition not yet processed by a group", ["group", "topic", "partition"]
)
DLQ_SIZE = Gauge("gatherly_dlq_records", "Records kept on a dead-letter topic", ["topic"])
UNHANDLED_TYPES = Counter(
    "gatherly_messages_skipped_total", "Messages of event types a group does not handle (skipped)", ["consumer", "type"]
)
INFRA_RETRIES = Counter(
    "gatherly_infrastructure_retries_total",
    "Records put back because the database or log failed (retried without limit, never parked)",
    ["consumer"],
)

# --- sagas (kernel/sagas.py): counted from each service's sagas table every SAGA_GAUGE_INTERVAL seconds -----------
SAGAS = Gauge("gatherly_sagas", "Sagas in a service's database, by kind and status", ["service", "kind", "status"])
