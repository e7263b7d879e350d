"""HTTP benchmark (`make bench-http`): wrk against a seeded `gatherly up`, each endpoint beside `/livez` in one run.

Each endpoint is measured in turns with `/livez` on the same server: `--slices` K (4) wrk runs of `--seconds`/K each
per side, alternating (`/livez`, endpoint, endpoint, `/livez`, …), so that both sides get the same seconds and see
the same moments of the host. The ratio is endpoint req/s ÷ `/livez` req/s, each side's requests over its summed
time; latency percentiles come from the slices' merged histograms (wrk's raw ones), CPU per request from the
server's summed CPU time. A single `/livez` run beside each endpoint made the ratio follow the host instead: on a VM
whose hypervisor takes the CPU in bursts, `/livez` ran at 1,190 to 4,401 req/s within one run. The report gives the
host's steal time (/proc/stat) per endpoint and over the run, and the spread of `/livez` across its slices; steal
above 5%, or a `/livez` slice at over 1.5x another's rate, prints an `UNSTEADY HOST` line: read those figures with
care.

Targets (issue #9): reads ≥ 0.4x `/livez` with p99 < 50 ms at 32 connections, writes ≥ 0.25x. A ratio under its
target prints a line starting with `BELOW TARGET`. The slowest endpoint (lowest ratio) is then profiled with py-spy
while wrk runs again.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "bench" / "reports"
DEMO_PASSWORD = "gatherly-demo-password"
ORGANIZER = "ada@demo.gatherly.local"
GROUPS_IN_ALL = 41  # the measurement: the demo's groups plus generated ones
BERLIN = (52.52, 13.405)
Value = TypeVar("Value", int, float)  # what a histogram counts: wrk's latencies (µs), the server's bucket bounds (s)

# A measurement is unsteady when the hypervisor took more than this share of the host's CPU time meanwhile, or when
# its fastest `/livez` slice ran this many times its slowest's rate (other work on the machine; the quiet run of
# 2026-12-01 had `/livez` within 3% from one endpoint to the next).
STEAL_WARNING = 0.05
SPREAD_WARNING = 1.5

# wrk calls `done` once at the end; it prints one JSON line the benchmark reads back. `latency(i)` is the i-th
# distinct latency wrk recorded (µs) and its count, lowest first (in wrk 4.1.0 `latency[i]` gives nothing of the
# sort): the histogram wrk takes its own percentiles from, its correction for coordinated omission included, so one
# slice gives wrk's p50/p99. The slices of a measurement merge theirs before percentiles are taken: a percentile of
# percentiles is none. Walking it costs wrk ~0.2 s after a 2 s run, outside the measured time.
DONE_LUA = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  local histogram = {}
  for i = 1, #latency do
    local value, count = latency(i)
    histogram[i] = string.format('[%d, %d]', value, count)
  end
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "bad_status": %d, "socket_errors": %d, '
    .. '"latency_us": [%s]}\\n', summary.requests, summary.duration, summary.errors.status, errors,
    table.concat(histogram, ', ')))
end
"""


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    kind: str  # "read" or "write"
    auth: bool = False
    body: dict[str, object] | None = None

    @property
    def target(self) -> float:
        return 0.4 if self.kind == "read" else 0.25


@dataclass(frozen=True)
class Slice:
    """One wrk run: one side's slice of an endpoint's measurement."""

    requests: int
    duration_us: int
    latency_us: dict[int, int]  # wrk's histogram: latency (µs) → requests
    bad_status: int  # answers other than 2xx/3xx
    socket_errors: int  # timeouts (wrk gives up after 2 s) and connection errors
    cpu_s: float  # the server's CPU time during the run
    server_buckets: dict[float, float]  # the server's histogram of the run: bucket bound (s) → requests, cumulative
    # Time the server's event-loop thread, and wrk's threads, were runnable but waited for a CPU (/proc's schedstat):
    # with one loop thread and wrk's two on a 2-core host, the operating system's queue shows in wrk's tail.
    server_wait_s: float = 0.0
    client_run_s: float = 0.0  # wrk's threads on a CPU
    client_wait_s: float = 0.0  # wrk's threads runnable, waiting for one

    @property
    def requests_per_s(self) -> float:
        return self.requests / (self.duration_us / 1e6)


@dataclass(frozen=True)
class Result:
    """One side of an endpoint's measurement, its slices taken together."""

    requests_per_s: float  # all the slices' requests over all their time
    p50_ms: float
    p99_ms: float
    bad_status: int
    socket_errors: int
    cpu_ms: float  # the server's CPU time per request: unlike req/s, it hardly depends on what else runs
    slowest_slice_per_s: float  # the spread of the slices' req/s: how steady the host was
    fastest_slice_per_s: float
    # The server's own time per request (RequestContextMiddleware: the app called → the last body byte sent), from
    # its latency histogram: beside wrk's figures it tells queueing before the app (accept, parse, loop) from the app.
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    # The share of the measured time the server's loop thread was runnable but waited for a CPU (every request waits
    # as long), and wrk's threads' waiting per unit of their running (a response read late is latency too).
    server_waiting: float = 0.0
    client_wait_per_run: float | None = None

    @classmethod
    def of(cls, slices: list[Slice]) -> Result:
        """Sums, not averages: req/s over the summed time, CPU over the summed requests, percentiles of the merged
        histograms (each slice weighs by its requests)."""
        requests = sum(s.requests for s in slices)
        latency = merge(s.latency_us for s in slices)
        server = merge(s.server_buckets for s in slices)
        rates = [s.requests_per_s for s in slices]
        return cls(
            requests_per_s=requests / (sum(s.duration_us for s in slices) / 1e6),
            p50_ms=(percentile(latency, 50) or 0) / 1000,
            p99_ms=(percentile(latency, 99) or 0) / 1000,
            bad_status=sum(s.bad_status for s in slices),
            socket_errors=sum(s.socket_errors for s in slices),
            cpu_ms=sum(s.cpu_s for s in slices) * 1000 / max(requests, 1),
            slowest_slice_per_s=min(rates),
            fastest_slice_per_s=max(rates),
            server_p50_ms=bucket_quantile(server, 0.5),
            server_p99_ms=bucket_quantile(server, 0.99),
            server_waiting=sum(s.server_wait_s for s in slices) / max(sum(s.duration_us for s in slices) / 1e6, 1e-9),
            client_wait_per_run=(
                sum(s.client_wait_s for s in slices) / client_run
                if (client_run := sum(s.client_run_s for s in slices))
                else None
            ),
        )


@dataclass(frozen=True)
class Measurement:
    endpoint: Endpoint
    bare: Result  # /livez
    measured: Result
    steal: float  # the share of the host's CPU time the hypervisor took meanwhile

    @property
    def ratio(self) -> float:
        return self.measured.requests_per_s / self.bare.requests_per_s

    def unsteady(self) -> list[str]:
        """Why the host was unsteady during this measurement; empty when it was not."""
        reasons = []
        if self.steal > STEAL_WARNING:
            reasons.append(f"steal {self.steal:.1%}")
        if self.bare.fastest_slice_per_s > SPREAD_WARNING * self.bare.slowest_slice_per_s:
            reasons.append(
                f"/livez {self.bare.slowest_slice_per_s:,.0f}-{self.bare.fastest_slice_per_s:,.0f} req/s across slices"
            )
        return reasons


def schedule(seconds: int, slices: int) -> list[tuple[str, int]]:
    """The wrk runs of one endpoint's measurement in order, as (side, seconds), side "livez" or "endpoint". Each side
    gets `seconds` in all, cut into `slices` runs of whole seconds (wrk's -d) that alternate with the other side's;
    which side goes first alternates too (AB BA AB …), so a host that speeds up or slows down favours neither."""
    slices = max(1, min(slices, seconds))
    runs = []
    for i in range(slices):
        length = seconds // slices + (1 if i < seconds % slices else 0)
        order = ("livez", "endpoint") if i % 2 == 0 else ("endpoint", "livez")
        runs += [(side, length) for side in order]
    return runs


def merge(histograms: Iterable[Mapping[Value, float]]) -> dict[Value, float]:
    """Histograms (value → count) added up."""
    merged: dict[Value, float] = collections.defaultdict(float)
    for histogram in histograms:
        for value, count in histogram.items():
            merged[value] += count
    return dict(merged)


def percentile(histogram: Mapping[Value, float], percent: int) -> Value | None:
    """The percentile of a histogram of values (value → count), as wrk's `latency:percentile` takes it: the
    smallest value with more than `percent`% of the counts at or below it (the largest for 100)."""
    total = int(sum(histogram.values()))
    if total <= 0:
        return None
    rank = min(total * percent // 100 + 1, total)
    seen = 0.0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return None


def cpu_times(stat: str) -> tuple[int, int]:
    """(steal, total) CPU time of the host in clock ticks, all CPUs, from /proc/stat's text. Steal is time the
    hypervisor ran others on this VM's virtual CPUs; total is every column up to steal (guest time is already in
    user time)."""
    ticks = [int(field) for field in stat.splitlines()[0].split()[1:9]]
    ticks += [0] * (8 - len(ticks))  # kernels before 2.6.11 have no steal column
    return ticks[7], sum(ticks)


def host_cpu_times() -> tuple[int, int]:
    return cpu_times(Path("/proc/stat").read_text())


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the host's CPU time stolen between two `cpu_times` samples."""
    elapsed = after[1] - before[1]
    return (after[0] - before[0]) / elapsed if elapsed > 0 else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "wrk.sh")], check=True)
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed and scripts/wrk.sh could not install it")
    return wrk


def start_server(port: int, data_dir: Path, sources: Path | None) -> subprocess.Popen[bytes]:
    log = (data_dir / "server.log").open("wb")
    env = {**os.environ, "GATHERLY_SHUTDOWN_DRAIN_SECONDS": "0"}
    if sources is not None:
        env["PYTHONPATH"] = source_path(sources)
    command = [sys.executable, "-m", "gatherly.app", "up", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def source_path(sources: Path) -> str:
    """A PYTHONPATH under which another checkout's packages shadow this one's (e.g. the code before a change)."""
    packages = [sources / "kernel", sources / "contracts", *sorted((sources / "services").iterdir()), sources / "app"]
    return os.pathsep.join(str(package / "src") for package in packages)


def wait_until_seeded(base: str, data_dir: Path, server: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"gatherly up exited with {server.returncode}; see {data_dir / 'server.log'}")
        if (data_dir / ".demo-loaded").exists():
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    sys.exit(f"gatherly up was not ready with its demo data after {timeout:.0f} s; see {data_dir / 'server.log'}")


def seed(base: str) -> tuple[str, str, str, str]:
    """Log in as the demo organizer, add groups around Berlin up to GROUPS_IN_ALL and an event in the organizer's
    first group, upload an image as the organizer and wait for the organizer's notifications; returns (token,
    group id, event id, image id)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        login = client.post("/api/auth/login", json={"email": ORGANIZER, "password": DEMO_PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        existing = client.get("/api/groups", params={"limit": 100}).json()["items"]
        for n in range(len(existing), GROUPS_IN_ALL):
            body = {
                "name": f"Bench group {n}",
                "description": f"Generated by bench/http_bench.py: group number {n}.",
                "topics": ["tech", "bench"],
                "city": "Berlin",
                "location": {"lat": BERLIN[0] + (n % 7) * 0.05, "lng": BERLIN[1] + (n % 5) * 0.05},
            }
            client.post("/api/groups", json=body, headers=headers).raise_for_status()
        mine = client.get("/api/groups", params={"member": "me"}, headers=headers).json()["items"]
        starts = datetime.now(UTC) + timedelta(days=14)
        event = {
            "group_id": mine[0]["id"],
            "title": "Bench meetup",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=2)).isoformat(),
            "timezone": "Europe/Berlin",
            "venue": {
                "name": "Bench hall",
                "address": "Alexanderplatz 1",
                "location": {"lat": BERLIN[0], "lng": BERLIN[1]},
            },
        }
        # The events service learns of the group and of the organizer's role from the groups service's events:
        # until it has, it answers 404 (no such group) or 403 (not a leader of it). Wait for both.
        deadline = time.monotonic() + 60
        while (created := client.post("/api/events", json=event, headers=headers)).status_code in (403, 404):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        created.raise_for_status()
        image_id = upload_image(client, headers)
        wait_for_notifications(client, headers)
        return login.json()["access_token"], mine[0]["id"], created.json()["id"], image_id


def upload_image(client: httpx.Client, headers: dict[str, str], timeout: float = 120.0) -> str:
    """Upload a picture as a client does (a slot, the file to the slot's URL, complete) and wait until the images
    service has made its variants; returns the ready image's id. The demo data has no images."""
    picture = io.BytesIO()
    Image.new("RGB", (800, 600), (40, 120, 200)).save(picture, "JPEG", quality=85)
    data = picture.getvalue()
    body = {"purpose": "event_cover", "content_type": "image/jpeg", "size_bytes": len(data)}
    slot = client.post("/api/images/uploads", json=body, headers=headers)
    slot.raise_for_status()
    image_id: str = slot.json()["image_id"]
    upload = slot.json()["upload"]
    if upload["method"] == "PUT":
        sent = client.put(upload["url"], content=data, headers=upload["headers"])
    else:
        sent = client.post(upload["url"], data=upload["fields"], files={"file": ("bench.jpg", data)})
    sent.raise_for_status()
    client.post(f"/api/images/{image_id}/complete", headers=headers).raise_for_status()
    deadline = time.monotonic() + timeout
    while (image := client.get(f"/api/images/{image_id}", headers=headers).json())["status"] == "pending":
        if time.monotonic() > deadline:
            sys.exit(f"the bench's image {image_id} was still pending after {timeout:.0f} s")
        time.sleep(0.2)
    if image["status"] != "ready":
        sys.exit(f"the bench's image was {image['status']}: {image['reason']}")
    return image_id


def wait_for_notifications(client: httpx.Client, headers: dict[str, str], timeout: float = 60.0) -> None:
    """The demo data notifies the organizer (join requests and approvals, RSVP confirmations, new events, a comment
    on an event the organizer is going to) through the notifications service's consumers: wait until the
    inbox that `GET /api/notifications` reads holds them and no more arrive (the same count 0.5 s apart), so that
    the page measured is the same throughout."""
    deadline = time.monotonic() + timeout
    before = 0
    while True:
        count = len(client.get("/api/notifications?limit=100", headers=headers).json()["items"])
        if count and count == before:
            return
        if time.monotonic() > deadline:
            sys.exit(f"the organizer's inbox was empty or still filling ({count}) after {timeout:.0f} s")
        before = count
        time.sleep(0.5)


def endpoints(group_id: str, event_id: str, image_id: str) -> list[Endpoint]:
    near = f"{BERLIN[0]},{BERLIN[1]}"
    return [
        Endpoint("GET /api/groups?limit=20", "GET", "/api/groups?limit=20", "read"),
        Endpoint("GET /api/groups?near=…&radius_km=50", "GET", f"/api/groups?near={near}&radius_km=50", "read"),
        Endpoint("GET /api/groups?q=python", "GET", "/api/groups?q=python", "read"),
        Endpoint("GET /api/users/me (bearer)", "GET", "/api/users/me", "read", auth=True),
        Endpoint("GET /api/groups?member=me (bearer)", "GET", "/api/groups?member=me", "read", auth=True),
        Endpoint("GET /api/groups/{id}", "GET", f"/api/groups/{group_id}", "read", auth=True),
        Endpoint("GET /api/groups/{id}/members", "GET", f"/api/groups/{group_id}/members", "read", auth=True),
        Endpoint("GET /api/events?limit=20", "GET", "/api/events?limit=20", "read"),
        Endpoint("GET /api/events/{id} (bearer)", "GET", f"/api/events/{event_id}", "read", auth=True),
        Endpoint("GET /api/notifications (bearer)", "GET", "/api/notifications", "read", auth=True),
        Endpoint(
            "GET /api/notifications/preferences (bearer)", "GET", "/api/notifications/preferences", "read", auth=True
        ),
        Endpoint("GET /api/images/{id} (bearer)", "GET", f"/api/images/{image_id}", "read", auth=True),
        Endpoint("PATCH /api/users/me (bearer)", "PATCH", "/api/users/me", "write", True, {"bio": "Benchmarking."}),
        # The same person answering again: the RSVP's whole transaction (event locked, counters, answer) each time.
        Endpoint(
            "PUT /api/events/{id}/rsvp (bearer)",
            "PUT",
            f"/api/events/{event_id}/rsvp",
            "write",
            True,
            {"response": "yes", "guests": 0},
        ),
        Endpoint(
            "PATCH /api/groups/{id} (bearer)",
            "PATCH",
            f"/api/groups/{group_id}",
            "write",
            True,
            {"description": "Talks, lightning talks and pairing for Pythonistas of every level."},
        ),
        # Measured after the inbox's reads: the first call marks every notification read, the others find none.
        Endpoint("POST /api/notifications/read-all (bearer)", "POST", "/api/notifications/read-all", "write", True),
    ]


def lua_script(endpoint: Endpoint, token: str, directory: Path) -> Path:
    lines = [f"wrk.method = {json.dumps(endpoint.method)}"]
    if endpoint.auth:
        lines.append(f'wrk.headers["Authorization"] = {json.dumps("Bearer " + token)}')
    if endpoint.body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = {json.dumps(json.dumps(endpoint.body))}")
    script = directory / f"{abs(hash(endpoint.name))}.lua"
    script.write_text("\n".join(lines) + "\n" + DONE_LUA)
    return script


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def schedstat(text: str) -> tuple[int, int]:
    """(on a CPU, runnable but waiting for one) in ns, from a thread's /proc/<pid>/task/<tid>/schedstat."""
    running, waiting, *_ = text.split()
    return int(running), int(waiting)


def thread_schedstats(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread of a process: (ns on a CPU, ns waiting for one) so far; threads that ended are left out."""
    stats = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stats[int(task.name)] = schedstat((task / "schedstat").read_text())
        except (OSError, ValueError):
            continue
    return stats


def waited(first: Mapping[int, tuple[int, int]], last: Mapping[int, tuple[int, int]]) -> tuple[float, float]:
    """(s on a CPU, s waiting for one) of the threads seen in both samples, between them."""
    running = sum(last[t][0] - first[t][0] for t in last if t in first)
    waiting = sum(last[t][1] - first[t][1] for t in last if t in first)
    return running / 1e9, waiting / 1e9


def latency_buckets(base: str) -> dict[float, float]:
    """The server's request latency histogram, every service and route summed: upper bound (s) → count."""
    buckets: dict[float, float] = collections.defaultdict(float)
    for line in httpx.get(base + "/metrics", timeout=30).text.splitlines():
        if line.startswith("gatherly_http_request_seconds_bucket{"):
            labels, _, value = line.rpartition(" ")
            bound = labels.partition('le="')[2].partition('"')[0]
            buckets[float(bound)] += float(value)
    return buckets


def bucket_delta(before: Mapping[float, float], after: Mapping[float, float]) -> dict[float, float]:
    """The requests a cumulative histogram counted between two snapshots, per bucket (still cumulative)."""
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def bucket_quantile(cumulative: Mapping[float, float], q: float) -> float | None:
    """The q-quantile (ms) of a cumulative histogram (upper bound in s → requests at or below it): the upper bound of
    the bucket it falls in (the histogram's resolution)."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    for bound in bounds:
        if cumulative[bound] >= q * cumulative[bounds[-1]]:
            return bound * 1000
    return None


def run_wrk(wrk: str, url: str, script: Path, args: argparse.Namespace, server_pid: int, seconds: int) -> Slice:
    command = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "-s", str(script), url]
    base = url.split("/", 3)
    origin = f"{base[0]}//{base[2]}"
    histogram_before = latency_buckets(origin)
    cpu_before = cpu_seconds(server_pid)
    loop_before = thread_schedstats(server_pid).get(server_pid, (0, 0))
    last: dict[int, tuple[int, int]] = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as client:
        # wrk's threads end with it, and are new: their figures are their totals at the last sample taken while it
        # ran (every 0.1 s, while its output is read).
        while True:
            try:
                output, _ = client.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                last = {**last, **thread_schedstats(client.pid)}
    if client.returncode:
        sys.exit(f"wrk exited with {client.returncode}:\n{output}")
    loop_after = thread_schedstats(server_pid).get(server_pid, loop_before)
    cpu = cpu_seconds(server_pid) - cpu_before
    client_run, client_wait = waited(dict.fromkeys(last, (0, 0)), last)
    histogram_after = latency_buckets(origin)
    line = next((x for x in output.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"wrk printed no result:\n{output}")
    raw = json.loads(line.removeprefix("RESULT "))
    return Slice(
        requests=raw["requests"],
        duration_us=raw["duration_us"],
        latency_us={value: count for value, count in raw["latency_us"]},
        bad_status=raw["bad_status"],
        socket_errors=raw["socket_errors"],
        cpu_s=cpu,
        server_buckets=bucket_delta(histogram_before, histogram_after),
        server_wait_s=(loop_after[1] - loop_before[1]) / 1e9,
        client_run_s=client_run,
        client_wait_s=client_wait,
    )


def measure(
    wrk: str, base: str, endpoint: Endpoint, scripts: dict[str, Path], args: argparse.Namespace, server_pid: int
) -> Measurement:
    """`/livez` and the endpoint in alternating slices (`schedule`), with the host's steal time meanwhile."""
    urls = {"livez": base + "/livez", "endpoint": base + endpoint.path}
    slices: dict[str, list[Slice]] = {"livez": [], "endpoint": []}
    host_before = host_cpu_times()
    for side, seconds in schedule(args.seconds, args.slices):
        slices[side].append(run_wrk(wrk, urls[side], scripts[side], args, server_pid, seconds))
    steal = steal_share(host_before, host_cpu_times())
    return Measurement(endpoint, Result.of(slices["livez"]), Result.of(slices["endpoint"]), steal)


def profile(server_pid: int, wrk: str, url: str, script: Path, args: argparse.Namespace) -> str:
    """py-spy samples the server while wrk loads the slowest endpoint; the top functions by own and total time."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return "py-spy is not installed (it is a dev dependency: `make install`)."
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        sampler = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(server_pid),
                "--duration",
                str(args.seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        run_wrk(wrk, url, script, args, server_pid, args.seconds)
        _, errors = sampler.communicate(timeout=60)
        if sampler.returncode != 0 or not raw.exists():
            return f"py-spy could not sample the server: {errors.strip()[-500:]}"
        return summarize_stacks(raw.read_text())


def summarize_stacks(collapsed: str, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "py-spy recorded no samples."

    everywhere = max(total.values())
    below = collections.Counter({frame: n for frame, n in total.items() if n < everywhere * 0.95})

    def table(counter: collections.Counter[str]) -> list[str]:
        rows = ["| share | function |", "|---:|---|"]
        rows += [f"| {n / samples:.1%} | `{frame}` |" for frame, n in counter.most_common(top)]
        return rows

    return "\n".join(
        [
            f"{samples} samples.",
            "",
            "Own time (where the CPU is):",
            "",
            *table(own),
            "",
            "Total time (incl. callees; frames under every sample, such as the CLI and uvicorn's loop, left out):",
            "",
            *table(below),
        ]
    )


def _short(frame: str) -> str:
    # py-spy frames look like `function (/path/to/module.py:123)`; keep the function and the file's tail.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if parts else where
    return f"{name} ({tail})"


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _ratio(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def slicing(args: argparse.Namespace) -> str:
    runs = schedule(args.seconds, args.slices)
    lengths = sorted({seconds for _, seconds in runs})
    return f"{args.seconds} s per side in {len(runs) // 2} slices of {'/'.join(map(str, lengths))} s"


def report(rows: list[Measurement], run_steal: float, args: argparse.Namespace, profile_text: str, slow: str) -> str:
    unsteady = [row for row in rows if row.unsteady()]
    lines = [
        "# HTTP benchmark",
        "",
        f"`make bench-http` on {platform.node()} ({os.cpu_count()} cores), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"wrk {args.threads} threads, {args.connections} connections, one `gatherly up` seeded with the demo and "
        f"generated groups ({GROUPS_IN_ALL} in all); each endpoint measured in turns with `/livez` on the same "
        f"server ({slicing(args)}, alternating: `/livez`, endpoint, endpoint, `/livez`, …), so that both see the "
        "same moments of the host. The ratio is the endpoint's requests over its slices' time ÷ `/livez`'s; p50/p99 "
        "come from the slices' merged latency histograms. Targets: reads ≥ 0.4x `/livez` and p99 < 50 ms; writes "
        f"≥ 0.25x. Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores shared with "
        "other work).",
        "",
        f"Steal time (the hypervisor's, /proc/stat) over the measurements: {run_steal:.1%}; per endpoint in the "
        "table, with the spread of `/livez` req/s across its slices.",
        "",
    ]
    if run_steal > STEAL_WARNING or unsteady:
        lines += [
            f"**Unsteady host** during {len(unsteady)} of {len(rows)} endpoints (steal above {STEAL_WARNING:.0%}, or "
            f"`/livez`'s fastest slice over {SPREAD_WARNING}x its slowest), steal {run_steal:.1%} over the run: read "
            "these figures with care, the CPU per request before the ratios.",
            "",
        ]
    lines += [
        "The server's own p50/p99 (≤ the bucket bound, from its latency histogram) is the time from the app being "
        "called to the last body byte; wrk's includes the wait before that (accept, parsing, the event loop's queue). "
        "Loop waiting for a CPU: the share of the endpoint's time the server's event-loop thread was runnable but not "
        "running (/proc schedstat: every request in flight waits as long); wrk waited / ran: its threads' time "
        "runnable but not running per unit of their running (a response read late counts in wrk's latency).",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | server p50/p99 ms | CPU ms/req | loop waiting for a CPU | wrk waited "
        "/ ran | timeouts | `/livez` req/s | `/livez` slices req/s | `/livez` CPU ms/req | steal | ratio | target | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        measured, bare = row.measured, row.bare
        lines.append(
            f"| `{row.endpoint.name}` | {measured.requests_per_s:,.0f} | {measured.p50_ms:.1f} | "
            f"{measured.p99_ms:.1f} | ≤{_ms(measured.server_p50_ms)} / ≤{_ms(measured.server_p99_ms)} | "
            f"{measured.cpu_ms:.2f} | {measured.server_waiting:.1%} | {_ratio(measured.client_wait_per_run)} | "
            f"{measured.socket_errors} | {bare.requests_per_s:,.0f} | "
            f"{bare.slowest_slice_per_s:,.0f}-{bare.fastest_slice_per_s:,.0f} | {bare.cpu_ms:.2f} | {row.steal:.1%} | "
            f"{row.ratio:.2f} | {row.endpoint.target} | {'met' if meets_target(row) else '**below**'} |"
        )
    lines += ["", f"## Profile of the slowest: `{slow}`", "", profile_text, ""]
    return "\n".join(lines)


def meets_target(row: Measurement) -> bool:
    return row.ratio >= row.endpoint.target and (row.endpoint.kind != "read" or row.measured.p99_ms < 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port for gatherly up (default: a free one)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of wrk per endpoint, and as many for /livez")
    parser.add_argument("--slices", type=int, default=4, help="turns with /livez the seconds are cut into")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--report", type=Path, default=REPORTS / "http.md")
    parser.add_argument("--only", default="", help="run only endpoints whose name contains this")
    parser.add_argument("--sources", type=Path, help="serve another checkout's code (e.g. before a change)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of the slowest endpoint")
    args = parser.parse_args()

    wrk = ensure_wrk()
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="gatherly-bench-") as tmp:
        data_dir = Path(tmp)
        server = start_server(port, data_dir, args.sources)
        try:
            wait_until_seeded(base, data_dir, server)
            token, group_id, event_id, image_id = seed(base)
            livez = data_dir / "livez.lua"
            livez.write_text(DONE_LUA)
            rows = []
            host_before = host_cpu_times()
            for endpoint in endpoints(group_id, event_id, image_id):
                if args.only not in endpoint.name:
                    continue
                # Each endpoint's requests must succeed, or the figure measures the error path.
                with httpx.Client(base_url=base, timeout=60) as client:
                    check = client.request(
                        endpoint.method,
                        endpoint.path,
                        json=endpoint.body,
                        headers={"Authorization": f"Bearer {token}"} if endpoint.auth else {},
                    )
                if check.status_code >= 400:
                    sys.exit(f"{endpoint.name} answered {check.status_code}: {check.text[:300]}")
                scripts = {"livez": livez, "endpoint": lua_script(endpoint, token, data_dir)}
                row = measure(wrk, base, endpoint, scripts, args, server.pid)
                measured, bare = row.measured, row.bare
                if measured.bad_status:
                    sys.exit(f"{endpoint.name}: {measured.bad_status} requests failed under load")
                rows.append(row)
                print(
                    f"{endpoint.name:45} {measured.requests_per_s:8,.0f} req/s  p50 {measured.p50_ms:6.1f} ms  "
                    f"p99 {measured.p99_ms:6.1f} ms  "
                    f"server ≤{_ms(measured.server_p50_ms)}/≤{_ms(measured.server_p99_ms)} ms  "
                    f"CPU {measured.cpu_ms:5.2f} ms/req  loop waiting {measured.server_waiting:.0%}  "
                    f"wrk waited/ran {_ratio(measured.client_wait_per_run)}  /livez {bare.requests_per_s:8,.0f} req/s "
                    f"({bare.slowest_slice_per_s:,.0f}-{bare.fastest_slice_per_s:,.0f}) {bare.cpu_ms:5.2f} ms/req  "
                    f"steal {row.steal:.1%}  ratio {row.ratio:.2f}",
                    flush=True,
                )
            run_steal = steal_share(host_before, host_cpu_times())
            slowest = min(rows, key=lambda row: row.ratio).endpoint
            profile_text = (
                "(not profiled: --no-profile)"
                if args.no_profile
                else profile(server.pid, wrk, base + slowest.path, lua_script(slowest, token, data_dir), args)
            )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report(rows, run_steal, args, profile_text, slowest.name))
    print(f"report: {args.report.relative_to(ROOT) if args.report.is_relative_to(ROOT) else args.report}")
    print(f"steal over the measurements: {run_steal:.1%}")
    if run_steal > STEAL_WARNING:
        print(f"UNSTEADY HOST: steal {run_steal:.1%} over the run (over {STEAL_WARNING:.0%}): read all with care")
    for row in rows:
        if reasons := row.unsteady():
            print(f"UNSTEADY HOST: {row.endpoint.name}: {', '.join(reasons)}: read its figures with care")
        if row.ratio < row.endpoint.target:
            print(f"BELOW TARGET: {row.endpoint.name} at {row.ratio:.2f}x /livez (target {row.endpoint.target}x)")
        if row.endpoint.kind == "read" and row.measured.p99_ms >= 50:
            print(f"BELOW TARGET: {row.endpoint.name} p99 {row.measured.p99_ms:.1f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
