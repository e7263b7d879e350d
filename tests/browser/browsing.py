"""What the browser tests share: the server under test, people, logging in, axe checks and screenshots."""

from __future__ import annotations

import io
import os
import re
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import BrowserContext, Page

from gatherly.app.devmail import newest_link_token

REPO = Path(__file__).resolve().parents[2]
WEB_DIST = REPO / "web" / "dist"
AXE = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("GATHERLY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README names this folder: each main screen, on a phone and on a desktop, after every run.
SCREENSHOTS = REPO / "web" / "screenshots"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
# Somewhere in Berlin: where the test people are and where the groups meet.
BERLIN = {"latitude": 52.5200, "longitude": 13.4050}
PASSWORD = "a long enough password 1"
RESET_LINK = re.compile(r"/reset-password\?token=([^\s\"'<>]+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    mail_dir: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def wait_for_token(self, email: str, link: re.Pattern[str] | None = None) -> str:
        """The token of the newest link mailed to `email` (the mail queue delivers within seconds)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            token = newest_link_token(self.mail_dir, email, *([link] if link else []))
            if token:
                return token
            time.sleep(0.1)
        raise AssertionError(f"no mail with a link reached {email}")

    def person(self, name: str) -> tuple[str, str]:
        """A confirmed account made through the API: (email, display name)."""
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.org"
        with self.api() as client:
            response = client.post(
                "/api/auth/signup", json={"email": email, "password": PASSWORD, "display_name": name}
            )
            assert response.status_code == 202, response.text
            token = self.wait_for_token(email)
            assert client.post("/api/auth/confirm", json={"token": token}).status_code == 200
        return email, name

    def token_of(self, email: str) -> str:
        with self.api() as client:
            response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])


NewContext = Callable[..., BrowserContext]


def log_in(page: Page, email: str, next_path: str = "/") -> None:
    page.goto(f"/login?next={urllib.parse.quote(next_path)}")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).last.click()
    page.wait_for_url(lambda url: "/login" not in url)


def check_accessibility(page: Page) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
    results = page.evaluate(AXE.read_text() + "\n;axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, "\n".join(bad)


def screenshot(page: Page, name: str) -> None:
    """The screen as it is, on a phone and on a desktop: `<name>-phone.png` and `<name>-desktop.png` (the page is
    resized for each, then given its own size back)."""
    own = page.viewport_size
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for device, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(viewport)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{device}.png"), full_page=True)
    if own:
        page.set_viewport_size(own)


def picture(side: int = 600) -> bytes:
    """A PNG of noise (incompressible: large enough that a throttled upload shows its progress)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
