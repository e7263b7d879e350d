"""Browser tests: one `gatherly up` per test module with the built web app, driven by Playwright in Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsing import BERLIN, CHROMIUM, CHROMIUM_ARGS, PHONE, WEB_DIST, NewContext, Server, free_port
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`gatherly up` in a process of its own, as people run it, with the built web app."""
    if not (WEB_DIST / "index.html").exists():
        raise AssertionError("web/dist is not built: run `make web` (make test does)")
    data_dir = tmp_path_factory.mktemp("browser-data")
    port = int(os.environ.get("GATHERLY_WEB_TEST_PORT") or free_port())
    env = {
        **os.environ,
        "GATHERLY_DEV": "true",
        # Cheap password hashes: these tests are about the browser, not argon2's cost.
        "GATHERLY_PASSWORD_TIME_COST": "1",
        "GATHERLY_PASSWORD_MEMORY_KIB": "8192",
        "GATHERLY_PASSWORD_PARALLELISM": "1",
        "GATHERLY_MAIL_POLL_INTERVAL": "0.2",
        "GATHERLY_RELAY_POLL_INTERVAL": "0.05",
        "GATHERLY_LOG_LEVEL": "WARNING",
    }
    log_path = data_dir / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gatherly.app", "up", "--port", str(port), "--data-dir", str(data_dir), "--no-demo"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"gatherly up exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gatherly up not ready in 90 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Server(url=url, mail_dir=data_dir / "mail")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# Per module, not per session: sync Playwright keeps an event loop running, which later asyncio tests may not meet.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: run `make chromium` (scripts/chromium.sh)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def new_context(browser: Browser, server: Server) -> Iterator[NewContext]:
    """Browser contexts (one per person) for this test, closed after it; phone-sized unless told otherwise."""
    made: list[BrowserContext] = []
    errors: list[str] = []  # uncaught errors in the app's pages: each one fails the test

    def make(viewport: dict[str, int] = PHONE, **options: Any) -> BrowserContext:
        defaults = {
            "geolocation": BERLIN,
            "permissions": ["geolocation"],
            "locale": "en-GB",
            "timezone_id": "Europe/London",
        }
        context = browser.new_context(base_url=server.url, viewport=viewport, **{**defaults, **options})
        context.set_default_timeout(15_000)
        context.on("weberror", lambda error: errors.append(f"{error.page.url if error.page else '?'}: {error.error}"))
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()
    assert not errors, "uncaught errors in the app:\n" + "\n".join(errors)
