"""Distributed mode serves the web app too: the stack's nginx, configured as `gatherly stack up` configures it, answers
`/` and the app's own routes with the built app, and sends API prefixes to the services, never to index.html."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gatherly.app.compose import REPO_WEB_DIST
from gatherly.app.gateway import PREFIXES
from gatherly.app.stack import NGINX, nginx_config
from gatherly.kernel.testing import free_port


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[str]:
    if not (REPO_WEB_DIST / "index.html").exists():
        raise AssertionError("web/dist is not built: run `make web` (make test does)")
    if not Path(NGINX).exists():
        raise AssertionError(f"{NGINX} is missing: run scripts/nginx.sh")
    port = free_port()
    # Ports nothing listens on: the services are not what this test is about.
    services = {name: [free_port()] for name in PREFIXES}
    (tmp_path / "nginx.conf").write_text(nginx_config(tmp_path, port, services, REPO_WEB_DIST))
    command = [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {(tmp_path / 'error.log').read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_stacks_nginx_serves_the_web_app_at_the_root_and_for_its_routes(nginx: str) -> None:
    with httpx.Client(base_url=nginx, timeout=5) as client:
        for path in ("/", "/events/some-id", "/confirm?token=abc", "/groups/new"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "<title>Gatherly</title>" in response.text, path
        assert client.get("/sw.js").headers["content-type"].endswith("javascript")
        assert client.get("/manifest.webmanifest").json()["display"] == "standalone"
        # An API path goes to its service (down here: 502), not to the app.
        assert client.get("/api/events").status_code == 502
