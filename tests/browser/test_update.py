"""A new version of the app is offered, not forced: a changed service worker waits until the person picks "Update".
Served from a copy of web/dist by a plain static server, so the test can publish a new version of sw.js."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browsing import PHONE, WEB_DIST
from playwright.sync_api import Browser, expect


class AppFiles(SimpleHTTPRequestHandler):
    """The built app's files; any other path is the app's shell (client routes), as `gatherly up` serves it."""

    def send_head(self) -> Any:
        if not (Path(self.directory) / self.path.split("?")[0].lstrip("/")).exists():
            self.path = "/index.html"
        return super().send_head()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not (WEB_DIST / "index.html").exists():
        raise AssertionError("web/dist is not built: run `make web` (make test does)")
    root = tmp_path / "dist"
    shutil.copytree(WEB_DIST, root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(AppFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


WAITING = "navigator.serviceWorker.getRegistration().then(r => Boolean(r && r.waiting))"


def test_a_new_version_waits_until_the_person_chooses_update(browser: Browser, site: tuple[str, Path]) -> None:
    url, root = site
    context = browser.new_context(viewport=PHONE, locale="en-GB")
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    try:
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_function("() => navigator.serviceWorker.controller !== null")
        expect(page.get_by_text("A new version of Gatherly is ready.")).to_be_hidden()

        # A new version is published; the browser finds it and installs it next to the running one.
        sw = root / "sw.js"
        sw.write_text(sw.read_text() + "\n// the next version\n")
        page.evaluate("navigator.serviceWorker.getRegistration().then(r => r.update()).then(() => null)")
        toast = page.get_by_text("A new version of Gatherly is ready.")
        expect(toast).to_be_visible(timeout=20_000)
        assert page.evaluate(WAITING)  # offered, not taken over

        # "Later": the page goes on with the version it has; the new one still waits, and is offered again.
        page.get_by_role("button", name="Later").click()
        expect(toast).to_be_hidden()
        assert page.evaluate(WAITING)
        page.reload()
        expect(toast).to_be_visible(timeout=20_000)

        # "Update": the new version takes over and the page reloads into it.
        page.evaluate("window.beforeTheUpdate = true")
        page.get_by_role("button", name="Update").click()
        page.wait_for_function("() => window.beforeTheUpdate === undefined")
        page.wait_for_function(f"() => {WAITING}.then(waiting => !waiting)")
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
    finally:
        context.close()
    assert not errors, errors
