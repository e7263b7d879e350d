"""Where a latency tail under wrk comes from (the thirty-fifth pass of docs/request-path.md): an experiment, not a report.

`uv run python bench/tail_probe.py [--only NAME ...] [--asyncio] [--server-cpu 0 --wrk-cpu 1] [--sources DIR]` starts
`gatherly up` under bench/tail_probe_server.py, seeds it as http_bench does, and for each endpoint runs wrk (2 threads,
32 connections) with the probes on: per request the head parsed → app called → done and where its task suspended; per
loop turn its wall and own CPU time and the requests started in it; every collection by generation; the loop thread's
and wrk's threads' time waiting for a CPU (schedstat); with --asyncio (asyncio's loop instead of uvloop) every
callback over 5 ms by task. Prints a summary per endpoint, the slowest 1% of requests against the collections and loop
turns they overlapped, and writes the raw figures as JSON under --out.
"""

# ruff: noqa: E402, E501, B007, B905  (an experiment's script: kept as it was run, long summary lines)

import argparse
import bisect
import collections
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

p = argparse.ArgumentParser()
p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
p.add_argument("--sources", default=None)
p.add_argument("--port", type=int, default=8611)
p.add_argument("--only", nargs="+", default=["GET /api/users/me", "member=me"])
p.add_argument("--seconds", type=int, default=8)
p.add_argument("--asyncio", action="store_true")
p.add_argument("--gc-off", action="store_true")
p.add_argument("--server-cpu", default=None)
p.add_argument("--wrk-cpu", default=None)
p.add_argument("--rounds", type=int, default=1)
p.add_argument("--out", default=tempfile.gettempdir() + "/tail_probe")
a = p.parse_args()
sys.path.insert(0, str(Path(a.root) / "bench"))
import http_bench as hb


class Window(TypedDict):
    """What tail_probe_server.py writes of a window (JSON: its tuples read back as lists, indexed and unpacked alike)."""

    t0: float
    t1: float
    gc_threshold: list[int]
    gc_counts: list[int]
    gen_sizes: list[int]
    iters_wall: list[float]
    iters_cpu: list[float]
    iters_req: list[int]
    gcs: list[tuple[float, float, int, int]]  # (t, dur, gen, collected)
    reqs: list[tuple[float, float, float, int, str]]  # (t_head, queue, app, steps, path)
    sites: list[tuple[str | None, int]]
    slow: list[tuple[float, float, float, str]]  # (t, wall, cpu, name)
    threads: list[str]
    native_id: int


class WrkResult(TypedDict):
    """The RESULT line of http_bench's wrk script, in the part read here."""

    requests: int
    duration_us: int
    latency_us: list[tuple[int, int]]  # (latency, count)


class WrkFigures(TypedDict):
    requests: int
    duration_us: int
    p50: float
    p99: float
    p999: float


Sched = dict[str, tuple[str, int, int, int]]  # thread id -> (name, ran ns, waited ns, slices)


class Probed(Window):
    """A window with what this script measured around it, as written under --out."""

    wrk: WrkFigures
    sched_server: Sched
    sched_wrk: Sched
    ctx: dict[str, int]
    load: float
    endpoint: str


def pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def latency_ms(histogram: Mapping[int, float], percent: int) -> float:
    """A percentile of wrk's latency histogram (µs) in ms; NaN for an empty one."""
    value = hb.percentile(histogram, percent)
    return float("nan") if value is None else value / 1000


def schedstat(pid: int) -> Sched:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run, wait, n = Path(task, "schedstat").read_text().split()
            comm = Path(task, "comm").read_text().strip()
            out[task.name] = (comm, int(run), int(wait), int(n))
        except OSError:
            pass
    return out


def ctx(pid: int) -> dict[str, int]:
    d = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if "ctxt_switches" in line:
            k, v = line.split(":")
            d[k] = int(v)
    return d


def slowest_percent(d: Window) -> None:
    """The slowest 1% of requests as the server saw them: GC time and the longest loop turn inside each."""
    walls = d["iters_wall"]
    ends = list(itertools.accumulate(walls, initial=d["t0"]))[1:]
    starts = [e - w for e, w in zip(ends, walls)]
    gcs = sorted(d["gcs"])
    gc_starts = [g[0] for g in gcs]
    totals = sorted(r[1] + r[2] for r in d["reqs"])
    if not totals:
        return
    threshold = totals[int(len(totals) * 0.99)]
    slow = [r for r in d["reqs"] if r[1] + r[2] >= threshold]
    gc_in: list[float] = []
    turn_in: list[float] = []
    for head, queue, app, _steps, _path in slow:
        end = head + queue + app
        gc_in.append(sum(g[1] for g in gcs[bisect.bisect_left(gc_starts, head) : bisect.bisect_left(gc_starts, end)]))
        turn_in.append(max(walls[bisect.bisect_left(ends, head) : bisect.bisect_left(starts, end)] or [0]))
    n = len(slow)
    print(
        f"  slowest 1% ({n}, head->done >= {threshold * 1000:.1f} ms): mean {sum(r[1] + r[2] for r in slow) / n * 1000:.1f} ms, GC inside mean {sum(gc_in) / n * 1000:.1f} ms, longest loop turn overlapped mean {sum(turn_in) / n * 1000:.1f} ms"
    )


outdir = Path(a.out)
outdir.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory(prefix="tail-") as tmp_name:
    tmp = Path(tmp_name)
    control, dump = tmp / "control", tmp / "dump.json"
    env = {
        **os.environ,
        "GATHERLY_SHUTDOWN_DRAIN_SECONDS": "0",
        "TAIL_CONTROL": str(control),
        "TAIL_OUT": str(dump),
        "TAIL_ROOT": a.root,
        "TAIL_ASYNCIO": "1" if a.asyncio else "0",
        "TAIL_GC_OFF": "1" if a.gc_off else "0",
    }
    if a.sources:
        env["PYTHONPATH"] = hb.source_path(Path(a.sources))
    cmd = [
        sys.executable,
        str(Path(a.root) / "bench" / "tail_probe_server.py"),
        "up",
        "--port",
        str(a.port),
        "--data-dir",
        str(tmp),
    ]
    if a.server_cpu:
        cmd = ["taskset", "-c", a.server_cpu, *cmd]
    base = f"http://127.0.0.1:{a.port}"
    server = subprocess.Popen(
        cmd, stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT, env=env, cwd=a.root
    )
    try:
        hb.wait_until_seeded(base, tmp, server)
        token, gid, eid, iid = hb.seed(base)
        time.sleep(2)
        wrk = hb.ensure_wrk()
        eps = [e for e in hb.endpoints(gid, eid, iid) if any(o in e.name for o in a.only)]
        n = 0
        for r in range(a.rounds):
            for ep in eps:
                script = hb.lua_script(ep, token, tmp)
                control.write_text(f"start {n}")
                time.sleep(0.6)
                s0, c0, l0 = schedstat(server.pid), ctx(server.pid), os.getloadavg()[0]
                wcmd = [wrk, "-t2", "-c32", f"-d{a.seconds}s", "-s", str(script), base + ep.path]
                if a.wrk_cpu:
                    wcmd = ["taskset", "-c", a.wrk_cpu, *wcmd]
                proc = subprocess.Popen(wcmd, stdout=subprocess.PIPE, text=True)
                time.sleep(1.0)
                try:
                    ws0 = schedstat(proc.pid)
                except FileNotFoundError:
                    ws0 = {}
                time.sleep(a.seconds - 2.0)
                try:
                    ws1 = schedstat(proc.pid)
                except FileNotFoundError:
                    ws1 = {}
                out = proc.communicate()[0]
                s1, c1 = schedstat(server.pid), ctx(server.pid)
                control.write_text(f"stop {n}")
                for _ in range(100):
                    time.sleep(0.1)
                    if dump.exists():
                        break
                d: Probed = json.loads(dump.read_text())
                dump.unlink()
                raw: WrkResult = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
                hist = {v: c for v, c in raw["latency_us"]}
                d["wrk"] = {
                    "requests": raw["requests"],
                    "duration_us": raw["duration_us"],
                    "p50": latency_ms(hist, 50),
                    "p99": latency_ms(hist, 99),
                    "p999": latency_ms(hist, 100),
                }
                d["sched_server"] = {
                    t: (s1[t][0], s1[t][1] - s0[t][1], s1[t][2] - s0[t][2], s1[t][3] - s0[t][3]) for t in s1 if t in s0
                }
                d["sched_wrk"] = {
                    t: (ws1[t][0], ws1[t][1] - ws0[t][1], ws1[t][2] - ws0[t][2], ws1[t][3] - ws0[t][3])
                    for t in ws1
                    if t in ws0
                }
                d["ctx"] = {k: c1[k] - c0[k] for k in c1}
                d["load"] = l0
                d["endpoint"] = ep.name
                tag = f"{n:02d}-{ep.name.split()[1].replace('/', '_').replace('?', '_')[:40]}"
                (outdir / f"{tag}.json").write_text(json.dumps(d))
                # summary
                rq = d["reqs"]
                q = [x[1] * 1000 for x in rq]
                app = [x[2] * 1000 for x in rq]
                tot = [(x[1] + x[2]) * 1000 for x in rq]
                steps = [x[3] for x in rq]
                iw = [x * 1000 for x in d["iters_wall"][1:]]
                ic = [x * 1000 for x in d["iters_cpu"][1:]]
                ir = d["iters_req"][1:]
                span = d["t1"] - d["t0"]
                print(
                    f"== {ep.name} load {l0:.1f}  wrk {raw['requests'] / (raw['duration_us'] / 1e6):,.0f} req/s p50 {d['wrk']['p50']:.1f} p99 {d['wrk']['p99']:.1f} max {d['wrk']['p999']:.1f}"
                )
                print(
                    f"  server: queue p50 {pct(q, 0.5):.1f} p99 {pct(q, 0.99):.1f} max {max(q):.1f} | app p50 {pct(app, 0.5):.2f} p99 {pct(app, 0.99):.2f} max {max(app):.1f} | head->end p99 {pct(tot, 0.99):.1f} | steps/request mean {statistics.mean(steps):.2f} max {max(steps)}"
                )
                print(
                    f"  iterations: {len(iw)} ({len(iw) / span:.0f}/s) wall p50 {pct(iw, 0.5):.2f} p99 {pct(iw, 0.99):.1f} max {max(iw):.1f}; >5ms {sum(x > 5 for x in iw)} >10ms {sum(x > 10 for x in iw)} >20ms {sum(x > 20 for x in iw)}; requests started/iter mean {statistics.mean(ir):.2f} p99 {pct(ir, 0.99)} max {max(ir)}"
                )
                long = [(w, c) for w, c in zip(iw, ic) if w > 10]
                if long:
                    print(
                        f"  iterations >10ms: wall sum {sum(w for w, _ in long):.0f} ms, own CPU {sum(c for _, c in long):.0f} ms; worst 8 (wall/cpu): "
                        + ", ".join(f"{w:.0f}/{c:.0f}" for w, c in sorted(long, reverse=True)[:8])
                    )
                by: dict[int, list[float]] = {}
                for t, dur, gen, coll in d["gcs"]:
                    by.setdefault(gen, []).append(dur * 1000)
                print(
                    "  gc: "
                    + "; ".join(
                        f"gen{g}: {len(v)} ({len(v) / span:.1f}/s) p50 {pct(v, 0.5):.2f} max {max(v):.1f} ms sum {sum(v):.0f} ms"
                        for g, v in sorted(by.items())
                    )
                    + f"  gen sizes at end {d['gen_sizes']}"
                )
                main_tid = str(d["native_id"])
                ms = d["sched_server"].get(main_tid)
                if ms:
                    print(
                        f"  server main thread: ran {ms[1] / 1e6:.0f} ms, waited on runqueue {ms[2] / 1e6:.0f} ms over {span:.1f} s ({ms[3]} slices); ctx {d['ctx']}"
                    )
                others = {k: v for k, v in d["sched_server"].items() if k != main_tid and v[1] > 1e6}
                if others:
                    print(
                        "  other server threads: "
                        + ", ".join(f"{v[0]} {v[1] / 1e6:.0f}ms/{v[2] / 1e6:.0f}ms" for v in others.values())
                    )
                print(
                    "  wrk threads (ran/waited, middle of run): "
                    + ", ".join(
                        f"{v[0]} {v[1] / 1e6:.0f}/{v[2] / 1e6:.0f} ({v[3]} slices)" for v in d["sched_wrk"].values()
                    )
                )
                print("  suspensions: " + "; ".join(f"{s} x{c}" for s, c in d["sites"][:6]))
                if d["slow"]:
                    cnt: collections.Counter[str] = collections.Counter()
                    mx: dict[str, float] = {}
                    for t, w, c, name in d["slow"]:
                        cnt[name] += 1
                        mx[name] = max(mx.get(name, 0), w * 1000)
                    mc: dict[str, float] = {}
                    for t, w, c, name in d["slow"]:
                        mc[name] = max(mc.get(name, 0), c * 1000)
                    print(
                        "  slow handles (>5ms wall): "
                        + "; ".join(f"{k} x{v} max wall {mx[k]:.0f} cpu {mc[k]:.0f}ms" for k, v in cnt.most_common(12))
                    )
                slowest_percent(d)
                sys.stdout.flush()
                n += 1
    finally:
        server.terminate()
        server.wait(timeout=60)
