"""The `gatherly` command as an operator uses it: a real process started, served, and stopped gracefully."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gatherly(*args: str, data_dir: Path, port: int | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GATHERLY_DATA_DIR": str(data_dir), "GATHERLY_LOG_JSON": "true"}
    command = [sys.executable, "-m", "gatherly.app", *args]
    if port is not None:
        command += ["--port", str(port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"gatherly exited early ({process.returncode}):\n{output}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("gatherly did not become ready")


def assert_stopped_gracefully(process: subprocess.Popen[bytes]) -> None:
    """uvicorn re-raises the signal once its graceful shutdown is done, so the exit status is the signal's;
    what matters is that every service went through its stop (consumers committed, relay flushed)."""
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    output = process.stdout.read().decode() if process.stdout else ""
    for service in ("users", "groups", "events", "notifications", "images"):
        assert f'"service": "{service}", "event": "service stopped"' in output or (
            "service stopped" in output and f"service={service}" in output
        ), output[-3000:]


def test_gatherly_up_serves_the_app_and_api_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = gatherly("up", "--no-demo", data_dir=tmp_path, port=port)
    try:
        wait_ready(port, process)
        base = f"http://127.0.0.1:{port}"
        assert "Gatherly" in httpx.get(base + "/").text
        assert httpx.get(base + "/api/openapi.json").status_code == 200
        assert httpx.get(base + "/livez").json() == {"status": "alive"}
        # What was alive once started is frozen out of the collector's reach (its full runs stopped the loop for
        # 100 ms and more); every pause since is measured.
        metrics = httpx.get(base + "/metrics").text
        frozen = next(line for line in metrics.splitlines() if line.startswith("gatherly_gc_frozen_objects "))
        assert float(frozen.split()[1]) > 50_000, frozen
        assert 'gatherly_gc_pause_seconds_count{generation="0"}' in metrics
        process.send_signal(signal.SIGTERM)
        assert_stopped_gracefully(process)
    finally:
        if process.poll() is None:
            process.kill()
    for service in ("users", "groups", "events", "notifications", "images"):
        assert (tmp_path / f"{service}.db").exists()
    assert (tmp_path / "log.db").exists()


def test_a_request_in_flight_at_sigterm_is_answered_before_exit(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GATHERLY_DATA_DIR": str(tmp_path), "GATHERLY_SHUTDOWN_DRAIN_SECONDS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gatherly.app", "up", "--no-demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(port, process)
        base = f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        # During the drain period the process still answers, but says it is not ready.
        response = httpx.get(base + "/readyz", timeout=5)
        assert response.status_code == 503
        assert "draining" in response.text or "not ready" in response.text
        assert httpx.get(base + "/livez", timeout=5).status_code == 200
        assert_stopped_gracefully(process)
    finally:
        if process.poll() is None:
            process.kill()


def test_migrate_creates_every_service_schema(tmp_path: Path) -> None:
    env = {**os.environ, "GATHERLY_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "gatherly.app", "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("users", "groups", "events", "notifications", "images"):
        assert f"migrated {service}" in result.stdout
