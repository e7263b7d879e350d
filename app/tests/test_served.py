"""The test server that serves Gatherly over TCP (`served_gatherly`)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gatherly.app.testing import FAST_SETTINGS, served_gatherly


async def test_a_port_taken_before_the_server_binds_it_is_the_error_that_it_did_not_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"the server on port {port} did not start"):
            async with served_gatherly(tmp_path / "data", port, **FAST_SETTINGS):
                pass
