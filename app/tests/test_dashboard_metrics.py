"""The Grafana dashboard (deploy/grafana/gatherly.json) asks only for what a running Gatherly's /metrics exports:
each metric its panels name, and each label they group by."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gatherly.app.testing import RunningGatherly

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gatherly.json"
SUFFIXES = re.compile(r"_(bucket|count|sum|total)$")


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


async def test_every_metric_and_label_the_dashboard_uses_is_scraped_from_a_running_gatherly(
    gatherly: RunningGatherly,
) -> None:
    assert (await gatherly.client.get("/api/groups/no-such-group")).status_code == 404
    assert (await gatherly.client.get("/api/groups")).status_code == 200
    scraped = await gatherly.client.get("/metrics")
    assert scraped.status_code == 200
    labels_of: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scraped.text):
        names = labels_of.setdefault(SUFFIXES.sub("", family.name), set())
        for sample in family.samples:
            names |= set(sample.labels)

    expressions = _expressions()
    used = {SUFFIXES.sub("", name) for e in expressions for name in re.findall(r"\bgatherly_\w+", e)}
    assert {"gatherly_http_requests", "gatherly_consumer_lag", "gatherly_dlq_records", "gatherly_sagas"} <= used
    assert used <= set(labels_of), f"on the dashboard, not in /metrics: {used - set(labels_of)}"

    # Labels grouped by: each must be one of its metric's (checked where the scrape has samples to show them).
    checked = 0
    for expression in expressions:
        for grouping, body in re.findall(r"by \(([^)]*)\) \(([^()]*(?:\([^()]*\))?[^()]*)\)", expression):
            (metric,) = {SUFFIXES.sub("", name) for name in re.findall(r"\bgatherly_\w+", body)}
            wanted = {label.strip() for label in grouping.split(",")} - {"le"}
            if labels_of[metric]:
                assert wanted <= labels_of[metric], f"{expression}: {wanted - labels_of[metric]} not on {metric}"
                checked += 1
    assert checked >= 10, "the grouping pattern no longer matches the dashboard's expressions"
    # Requests are counted per route template: the dashboard's per-route panels have something to show.
    assert 'route="/api/groups/{group}"' in scraped.text
