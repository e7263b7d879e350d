"""What a process is built with: the embedded log's polling for other processes, uvicorn's access log."""

from __future__ import annotations

from pathlib import Path

from gatherly.app.compose import POLL_ALONE, POLL_SHARED, Process
from gatherly.app.request_head import BoundedHeadProtocol
from gatherly.app.server import server_config
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.settings import Settings


def poll_interval_of(process: Process) -> float:
    log = process.platform.log
    assert isinstance(log, EmbeddedLog)
    return log.poll_interval


def test_consumers_poll_seldom_when_every_service_is_in_the_process(tmp_path: Path) -> None:
    # Appends of this process wake its consumers at once; polling only finds what other processes appended.
    assert poll_interval_of(Process(Settings(data_dir=tmp_path))) == POLL_ALONE
    assert poll_interval_of(Process(Settings(data_dir=tmp_path), ["groups"], serve_web=False)) == POLL_SHARED
    assert POLL_SHARED < POLL_ALONE


def test_the_log_poll_interval_can_be_set(tmp_path: Path) -> None:
    assert poll_interval_of(Process(Settings(data_dir=tmp_path, log_poll_interval=0.2))) == 0.2


def test_the_access_log_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert server_config(Process(Settings(data_dir=tmp_path)), "127.0.0.1", 0).access_log is False
    asked = Process(Settings(data_dir=tmp_path, access_log=True))
    assert server_config(asked, "127.0.0.1", 0).access_log is True


def test_the_server_bounds_request_heads(tmp_path: Path) -> None:
    # uvicorn's own httptools protocol holds a request line or headers of any size (app/tests/test_request_head.py).
    assert server_config(Process(Settings(data_dir=tmp_path)), "127.0.0.1", 0).http is BoundedHeadProtocol
