"""The kernel's metrics helpers: `observe_all` gives a histogram the samples `observe` one by one gives it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from gatherly.kernel.metrics import HANDLE_LATENCY, observe_all

BOUNDS = HANDLE_LATENCY._upper_bounds[:-1]  # the consumers' latency buckets (+Inf is added by the client)


def latency_histogram() -> Histogram:
    return Histogram("latency_seconds", "a latency", ["consumer"], buckets=BOUNDS, registry=CollectorRegistry())


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    """Each sample's value by (name, bucket bound), leaving out `_created` (when the child was made)."""
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


AMOUNTS = [
    0.0,
    0.0004,
    0.001,  # on a bound: counted in that bucket (`le`), not the next
    0.0010001,
    0.0025,
    0.003,
    0.003,
    0.049,
    0.05,
    0.7,
    1.0,
    2.5,
    9.99,
    30.0,
    30.5,  # past the last bound: +Inf only
    1e9,
    0.0001,
]


@pytest.mark.parametrize(
    "calls",
    [
        [AMOUNTS],
        [AMOUNTS[:5], AMOUNTS[5:9], [], AMOUNTS[9:]],  # several polls' worth, one of them empty
        [[0.004] * 1000],  # a poll of one backlog: all in one bucket
        [[]],
    ],
)
def test_observing_all_at_once_gives_the_samples_observing_one_by_one_gives(calls: list[list[float]]) -> None:
    one_by_one, at_once = latency_histogram(), latency_histogram()
    for amounts in calls:
        child = one_by_one.labels("group")
        for amount in amounts:
            child.observe(amount)
        observe_all(at_once.labels("group"), amounts)
    expected, got = samples(one_by_one), samples(at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_sum"):
            assert got[key] == pytest.approx(value, rel=1e-12)  # added as one float: the last bits may differ
        else:
            assert got[key] == value, key


def test_a_histogram_with_labels_is_observed_through_its_child() -> None:
    with pytest.raises(ValueError, match="missing label values"):
        observe_all(latency_histogram(), [0.1])
