"""`gatherly stack up --replicas N`: nginx's upstream lists every replica, `stack status` shows each, and the
supervisor starts a replica that exited again on its port and keeps the gateway sending only to ready replicas —
with the real nginx and small stand-in replicas (the services themselves are test_distributed.py's business)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from typer.testing import CliRunner

from gatherly.app.cli import app
from gatherly.app.gateway import PREFIXES
from gatherly.app.server import server_config
from gatherly.app.stack import (
    NGINX,
    PROBE_PERIOD_S,
    Replica,
    Stack,
    StackState,
    keep_replicas,
    nginx_config,
    reload_nginx,
)
from gatherly.kernel.testing import free_port, stop_process

# A replica stand-in: /readyz answers 200, and 503 once SIGTERM came, as a draining service does (it exits at the
# second SIGTERM, so the test decides how long the drain lasts); every other path answers with its process id, so a
# test sees which replica the gateway chose.
REPLICA = """
import http.server, os, signal, sys, threading
draining = threading.Event()
def drain(*_):
    if draining.is_set():
        os._exit(0)
    draining.set()
signal.signal(signal.SIGTERM, drain)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = not draining.is_set()
        body = (b"ready" if ready else b"draining") if self.path == "/readyz" else str(os.getpid()).encode()
        self.send_response(503 if self.path == "/readyz" and not ready else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *_):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_the_gateway_lists_every_replica_of_each_service_with_passive_health(tmp_path: Path) -> None:
    services = {"users": [8611, 8612], "groups": [8613, 8614]}
    config = nginx_config(tmp_path, 8610, services, tmp_path, down=frozenset({8614}))
    upstreams = dict(re.findall(r"upstream (\w+) \{ (.*?)keepalive", config))
    assert set(upstreams) == {"users", "groups"}
    assert re.findall(r"server 127\.0\.0\.1:(\d+) max_fails=\d+ fail_timeout=\d+s(?: down)?;", upstreams["users"]) == [
        "8611",
        "8612",
    ]
    assert "8613 max_fails=2 fail_timeout=3s;" in upstreams["groups"]
    assert "8614 max_fails=2 fail_timeout=3s down;" in upstreams["groups"]
    assert "proxy_next_upstream error timeout http_502 http_503;" in config
    # Only the services given get locations (nginx refuses a location naming an upstream it does not know).
    assert "proxy_pass http://events" not in config and "location /api/groups { proxy_pass http://groups; }" in config


def test_nginx_closes_idle_upstream_connections_before_the_services_do(tmp_path: Path) -> None:
    """Otherwise nginx may send a request on a connection uvicorn is closing: a reset, and a POST is not retried."""
    config = nginx_config(tmp_path, 8610, {"users": [8611]}, tmp_path)
    (nginx_idle,) = re.findall(r"upstream users \{ .*?keepalive_timeout (\d+)s; \}", config)
    service_idle = server_config(SimpleNamespace(settings=SimpleNamespace(access_log=False)), "127.0.0.1", 0)  # type: ignore[arg-type]
    assert int(nginx_idle) < service_idle.timeout_keep_alive


def test_status_shows_each_replica_with_its_pid_port_and_whether_the_gateway_sends_to_it(tmp_path: Path) -> None:
    with contextlib.ExitStack() as running:
        ports = [free_port(), free_port()]
        processes = [running.enter_context(_stand_in(port)) for port in ports]
        for port in ports:
            _until(lambda p=port: _answers(f"http://127.0.0.1:{p}/readyz") == 200, f"stand-in on {port}")
        state = StackState(tmp_path / "stack.json", pid=processes[0].pid, url="http://localhost:1", ready=True)
        state.add("groups", processes[0].pid, ports[0], replica=1, routed=True)
        state.add("groups", processes[1].pid, ports[1], replica=2, routed=False)
        status = CliRunner().invoke(app, ["stack", "status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 0, status.output
    assert re.search(
        rf"groups\s+\S\s+up\s+\S\s+{processes[0].pid}\s+\S\s+{ports[0]}\s+\S\s+#1\s+\S\s+routed", status.output
    )
    assert re.search(
        rf"groups\s+\S\s+up\s+\S\s+{processes[1].pid}\s+\S\s+{ports[1]}\s+\S\s+#2\s+\S\s+not routed", status.output
    )
    assert "2 up, 0 down" in status.output
    loaded = StackState.load(tmp_path)
    assert loaded is not None and [(c.replica, c.routed) for c in loaded.components] == [(1, True), (2, False)]


@contextlib.contextmanager
def _stand_in(port: int):  # type: ignore[no-untyped-def]
    process = subprocess.Popen([sys.executable, "-c", REPLICA, str(port)])
    try:
        yield process
    finally:
        stop_process(process, 10)


def _nginx(folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")]
    )


def _answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2.0).status_code
    except httpx.TransportError:
        return None


def _until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.05)


def _saved_as_routed(data_dir: Path, replica: Replica) -> bool:
    state = StackState.load(data_dir)
    assert state is not None and replica.process is not None
    component = next(c for c in state.components if (c.name, c.replica) == (replica.service, replica.number))
    return component.pid == replica.process.pid and component.routed


@contextlib.asynccontextmanager
async def _supervised_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Two stand-in replicas of every service behind the stack's real nginx, and the supervisor's loop running."""
    if not Path(NGINX).exists():
        raise AssertionError(f"{NGINX} is missing: run scripts/nginx.sh")
    port = free_port()
    stack = Stack(url=f"http://127.0.0.1:{port}", bootstrap="", connect_url="", nginx_dir=tmp_path, gateway_port=port)
    for name in PREFIXES:
        for number in (1, 2):
            replica_port = free_port()
            command = [sys.executable, "-c", REPLICA, str(replica_port)]
            stack.replicas.append(Replica(name, number, replica_port, command, tmp_path / f"{name}-{number}.log"))
    stack.state = StackState(tmp_path / "stack.json", url=stack.url, ready=True)
    try:
        for replica in stack.replicas:
            process = replica.start()
            replica.routed = replica.answered = True  # as running_stack does once it has waited for each
            stack.state.add(replica.service, process.pid, replica.port, replica.number, routed=True)
        for replica in stack.replicas:
            await asyncio.to_thread(
                _until, lambda r=replica: _answers(f"http://127.0.0.1:{r.port}/readyz") == 200, "ready"
            )
        stack.write_nginx_config()
        stack.nginx = await asyncio.to_thread(_nginx, tmp_path)
        await asyncio.to_thread(_until, lambda: _answers(f"{stack.url}/api/groups") == 200, "nginx answers")
        said: list[str] = []
        supervisor = asyncio.create_task(keep_replicas(stack, said.append))
        try:
            yield stack
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
    finally:
        if stack.nginx is not None:
            stop_process(stack.nginx, 10)
        for replica in stack.replicas:  # the stand-ins drain until a second SIGTERM: no need to wait for them
            if replica.process is not None:
                replica.process.kill()
                replica.process.wait()


def _pids_behind_gateway(url: str, requests: int = 8) -> set[int]:
    return {int(httpx.get(f"{url}/api/groups", timeout=5.0).text) for _ in range(requests)}


@pytest.mark.timeout(300)
async def test_a_replica_given_sigterm_leaves_the_gateway_is_started_again_and_comes_back(tmp_path: Path) -> None:
    async with _supervised_stack(tmp_path) as stack:
        first, second = [r for r in stack.replicas if r.service == "groups"]
        assert first.process is not None and second.process is not None
        old_pid = first.process.pid
        assert await asyncio.to_thread(_pids_behind_gateway, stack.url) == {old_pid, second.process.pid}

        first.process.terminate()  # its /readyz turns 503 at once; it serves on
        # Out of the gateway while draining: nginx's upstream marks it down and stack.json says so.
        await asyncio.to_thread(_until, lambda: not first.routed, "replica #1 out of the gateway")
        assert f"127.0.0.1:{first.port} max_fails=2 fail_timeout=3s down;" in (tmp_path / "nginx.conf").read_text()
        assert await asyncio.to_thread(_pids_behind_gateway, stack.url) == {second.process.pid}
        assert first.process.pid == old_pid and first.process.poll() is None, "checked while it drained"
        first.process.terminate()  # the drain is over: it exits

        # Started again on its port once it exited, then back in the gateway when ready.
        await asyncio.to_thread(_until, lambda: first.routed and first.process.pid != old_pid, "replica #1 back")
        # stack.json is rewritten just after the replica is marked routed (CI once read it in between): wait for it.
        await asyncio.to_thread(_until, lambda: _saved_as_routed(tmp_path, first), "stack.json says replica #1 is back")
        assert first.process.pid != old_pid
        assert await asyncio.to_thread(_pids_behind_gateway, stack.url) == {first.process.pid, second.process.pid}


@pytest.mark.timeout(120)
async def test_when_no_replica_of_a_service_is_ready_the_gateway_keeps_all_of_them(tmp_path: Path) -> None:
    async with _supervised_stack(tmp_path) as stack:
        events = [r for r in stack.replicas if r.service == "events"]
        for replica in events:
            assert replica.process is not None
            replica.process.send_signal(19)  # SIGSTOP: alive, but its probes time out
        try:
            # Past the second timed-out probe of each (unready), and routed again after it.
            await asyncio.to_thread(_until, lambda: all(r.failed_probes >= 3 for r in events), "probes timed out")
            assert all(r.routed for r in events)
            assert f"127.0.0.1:{events[0].port} max_fails=2 fail_timeout=3s;" in (tmp_path / "nginx.conf").read_text()
        finally:
            for replica in events:
                assert replica.process is not None
                replica.process.send_signal(18)  # SIGCONT


@pytest.mark.timeout(60)
def test_a_reload_returns_once_nginx_runs_a_worker_with_the_new_configuration(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_config(tmp_path, port, {}, tmp_path))
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")]
    )
    try:
        _until(lambda: _answers(f"http://127.0.0.1:{port}/") == 200, "nginx answers")
        before = set(Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split())
        reload_nginx(nginx.pid)
        after = set(Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split())
        assert after - before
    finally:
        stop_process(nginx, 10)


@pytest.mark.timeout(180)
async def test_a_replica_still_starting_is_never_routed_even_when_no_replica_is_ready(tmp_path: Path) -> None:
    """The drill found it: the other replica's probes timed out under load, every replica was routed, the one
    still importing too, stack.json said so, and the drill sent SIGTERM to the only one serving."""
    async with _supervised_stack(tmp_path) as stack:
        starting, slow = [r for r in stack.replicas if r.service == "groups"]
        assert starting.process is not None and slow.process is not None
        old_pid = starting.process.pid
        starting.command = [sys.executable, "-c", "import time; time.sleep(120)"]  # started again, never listens
        starting.process.kill()
        await asyncio.to_thread(_until, lambda: starting.process.pid != old_pid, "replica #1 started again")
        slow.process.send_signal(19)  # SIGSTOP: alive, but its probes time out
        try:
            await asyncio.to_thread(_until, lambda: slow.failed_probes >= 3, "replica #2's probes timed out")
            await asyncio.sleep(2 * PROBE_PERIOD_S)
            assert slow.routed and not starting.routed
            state = StackState.load(tmp_path)
            assert state is not None
            routed = {c.replica: c.routed for c in state.components if c.name == "groups"}
            assert routed == {1: False, 2: True}
            assert (
                f"127.0.0.1:{starting.port} max_fails=2 fail_timeout=3s down;" in (tmp_path / "nginx.conf").read_text()
            )
        finally:
            slow.process.send_signal(18)  # SIGCONT
