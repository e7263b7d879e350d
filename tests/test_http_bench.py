"""bench/http_bench.py's arithmetic: the slices `/livez` and an endpoint alternate in, how their figures are taken
together (sums and merged histograms, never averages of percentiles) and the host's steal time from /proc/stat."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "http_bench.py"
    spec = importlib.util.spec_from_file_location("http_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def a_slice(
    latency_us: dict[int, int], seconds: float, cpu_s: float = 0.0, server: dict[float, float] | None = None
) -> object:
    return bench.Slice(
        requests=sum(latency_us.values()),
        duration_us=int(seconds * 1e6),
        latency_us=latency_us,
        bad_status=0,
        socket_errors=0,
        cpu_s=cpu_s,
        server_buckets=server or {},
    )


def test_each_side_gets_the_same_seconds_in_alternating_slices() -> None:
    assert bench.schedule(8, 4) == [
        ("livez", 2),
        ("endpoint", 2),
        ("endpoint", 2),
        ("livez", 2),
        ("livez", 2),
        ("endpoint", 2),
        ("endpoint", 2),
        ("livez", 2),
    ]


def test_seconds_that_do_not_divide_go_to_the_first_slices() -> None:
    runs = bench.schedule(5, 4)
    assert [seconds for side, seconds in runs if side == "livez"] == [2, 1, 1, 1]
    assert [seconds for side, seconds in runs if side == "endpoint"] == [2, 1, 1, 1]


def test_a_slice_is_at_least_a_second_and_one_slice_is_the_old_order() -> None:
    assert bench.schedule(2, 4) == [("livez", 1), ("endpoint", 1), ("endpoint", 1), ("livez", 1)]
    assert bench.schedule(8, 1) == [("livez", 8), ("endpoint", 8)]


def test_histograms_merge_by_adding_counts() -> None:
    assert bench.merge([{1000: 2, 5000: 1}, {5000: 3, 9000: 1}, {}]) == {1000: 2, 5000: 4, 9000: 1}


def test_percentiles_follow_wrks_rule() -> None:
    # wrk: rank = round(p/100 * count + 0.5), the first value whose cumulative count reaches it.
    one_each = {value: 1 for value in range(1, 101)}
    assert bench.percentile(one_each, 50) == 51
    assert bench.percentile(one_each, 99) == 100
    assert bench.percentile(one_each, 100) == 100
    assert bench.percentile({7000: 3}, 99) == 7000
    assert bench.percentile({}, 50) is None


def test_percentiles_come_from_the_merged_histogram_not_from_the_slices_percentiles() -> None:
    busy = a_slice({1000: 990, 2000: 10}, seconds=1)  # 1,000 requests: p99 2 ms
    stalled = a_slice({50_000: 10}, seconds=3)  # 10 requests, all 50 ms: p99 50 ms
    result = bench.Result.of([busy, stalled])
    # 1,010 requests: the 1,000th is 2 ms. The slices' p99s averaged would say 26 ms.
    assert result.p99_ms == 2.0
    assert result.p50_ms == 1.0
    assert (result.slowest_slice_per_s, result.fastest_slice_per_s) == (pytest.approx(10 / 3), 1000)


def test_rate_and_cpu_are_sums_over_the_slices() -> None:
    busy = a_slice({1000: 1000}, seconds=1, cpu_s=0.5)
    stalled = a_slice({50_000: 10}, seconds=3, cpu_s=0.1)
    result = bench.Result.of([busy, stalled])
    assert result.requests_per_s == pytest.approx(1010 / 4)  # the slices' rates averaged: ~502
    assert result.cpu_ms == pytest.approx(600 / 1010)


def test_the_servers_percentiles_come_from_its_merged_bucket_counts() -> None:
    before = {0.005: 40.0, 0.05: 50.0, float("inf"): 50.0}
    after = {0.005: 140.0, 0.05: 150.0, float("inf"): 150.0}
    fast = bench.bucket_delta(before, after)
    assert fast == {0.005: 100.0, 0.05: 100.0, float("inf"): 100.0}
    slow = {0.005: 0.0, 0.05: 10.0, float("inf"): 10.0}
    merged = bench.merge([fast, slow])
    assert bench.bucket_quantile(merged, 0.5) == 5.0
    assert bench.bucket_quantile(merged, 0.99) == 50.0
    assert bench.bucket_quantile({}, 0.5) is None
    result = bench.Result.of([a_slice({1000: 100}, 1, server=fast), a_slice({1000: 10}, 1, server=slow)])
    assert (result.server_p50_ms, result.server_p99_ms) == (5.0, 50.0)


def test_steal_is_the_share_of_all_cpu_time_between_two_samples() -> None:
    before = bench.cpu_times("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n")
    after = bench.cpu_times("cpu  150 0 70 850 10 0 0 120 0 0\ncpu0 75 0 35 425 5 0 0 60 0 0\n")
    assert before == (40, 1000)
    assert after == (120, 1200)
    assert bench.steal_share(before, after) == pytest.approx(80 / 200)


def test_guest_time_is_not_counted_twice_and_an_old_kernel_has_no_steal() -> None:
    assert bench.cpu_times("cpu  100 0 0 0 0 0 0 0 60 0\n") == (0, 100)  # guest time is inside user time
    assert bench.cpu_times("cpu  100 0 50 800\n") == (0, 950)
    assert bench.steal_share((5, 100), (5, 100)) == 0.0


def test_this_hosts_cpu_times_read() -> None:
    steal, total = bench.host_cpu_times()
    assert 0 <= steal <= total
    assert total > 0


def rows(steal: float, livez: tuple[int, int] = (2800, 2000)) -> list[object]:
    endpoint = bench.Endpoint("GET /api/users/me (bearer)", "GET", "/api/users/me", "read", auth=True)
    bare = bench.Result.of([a_slice({1000: requests}, seconds=2) for requests in livez])
    measured = bench.Result.of([a_slice({5000: 1000}, seconds=2), a_slice({5000: 1000}, seconds=2)])
    return [bench.Measurement(endpoint, bare, measured, steal)]


def test_the_report_warns_when_the_host_was_unsteady() -> None:
    args = argparse.Namespace(threads=2, connections=32, seconds=4, slices=2)
    steady = bench.report(rows(0.01), 0.01, args, "", "GET /api/users/me (bearer)")
    stolen = bench.report(rows(0.12), 0.03, args, "", "GET /api/users/me (bearer)")
    crowded = bench.report(rows(0.01, livez=(4000, 2000)), 0.01, args, "", "GET /api/users/me (bearer)")
    assert "Unsteady host" not in steady
    assert "Unsteady host** during 1 of 1 endpoints" in stolen
    assert "Unsteady host** during 1 of 1 endpoints" in crowded
    assert rows(0.12)[0].unsteady() == ["steal 12.0%"]
    assert rows(0.01, livez=(4000, 2000))[0].unsteady() == ["/livez 1,000-2,000 req/s across slices"]
    # /livez: 4,800 requests in 4 s (slices at 1,400 and 1,000 req/s); the endpoint 2,000 in 4 s: ratio 0.42.
    row = next(line for line in steady.splitlines() if line.startswith("| `GET /api/users/me"))
    assert "| 1,200 | 1,000-1,400 |" in row
    assert "| 1.0% | 0.42 | 0.4 | met |" in row


def test_a_threads_running_and_waiting_times_are_read_from_its_schedstat() -> None:
    assert bench.schedstat("5862411222 3449012345 9288\n") == (5862411222, 3449012345)
    before = {1: (1_000_000_000, 0), 2: (0, 500_000_000)}
    after = {1: (1_500_000_000, 250_000_000), 2: (100_000_000, 700_000_000), 3: (9_000_000_000, 9_000_000_000)}
    # A thread seen only once (started or ended between the samples) is left out rather than counted from zero.
    assert bench.waited(before, after) == pytest.approx((0.6, 0.45))


def test_this_process_main_thread_has_a_schedstat() -> None:
    import os

    stats = bench.thread_schedstats(os.getpid())
    running, waiting = stats[os.getpid()]
    assert running > 0
    assert waiting >= 0


def test_the_loops_waiting_is_a_share_of_the_measured_time_and_wrks_a_ratio_to_its_running() -> None:
    def waiting_slice(seconds: float, loop_wait: float, client_run: float, client_wait: float) -> object:
        return bench.Slice(
            requests=100,
            duration_us=int(seconds * 1e6),
            latency_us={1000: 100},
            bad_status=0,
            socket_errors=0,
            cpu_s=0.1,
            server_buckets={},
            server_wait_s=loop_wait,
            client_run_s=client_run,
            client_wait_s=client_wait,
        )

    result = bench.Result.of([waiting_slice(2, 0.5, 0.2, 0.1), waiting_slice(2, 0.1, 0.2, 0.5)])
    assert result.server_waiting == pytest.approx(0.6 / 4)
    assert result.client_wait_per_run == pytest.approx(0.6 / 0.4)
    # wrk never sampled (it ended before the first sample): unknown, not zero.
    assert bench.Result.of([a_slice({1000: 10}, 1)]).client_wait_per_run is None


def test_the_report_gives_the_loops_and_wrks_waiting_for_a_cpu() -> None:
    args = argparse.Namespace(threads=2, connections=32, seconds=4, slices=2)
    text = bench.report(rows(0.01), 0.01, args, "", "GET /api/users/me (bearer)")
    assert "| loop waiting for a CPU | wrk waited / ran |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `GET /api/users/me"))
    assert "| 0.0% | ? | 0 |" in row  # a_slice records no waiting and no wrk threads
    header = next(line for line in text.splitlines() if line.startswith("| endpoint"))
    assert header.count("|") == row.count("|")
