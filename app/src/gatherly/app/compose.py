"""Assembles processes: everything in one (`gatherly up`) or one service per process (`gatherly run`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from gatherly.app.demo import seed_demo
from gatherly.app.gateway import Gateway, front_door
from gatherly.app.platform import build_platform
from gatherly.app.services import ALL
from gatherly.kernel.boundary import install_boundary
from gatherly.kernel.runtime import Platform, ServiceHost
from gatherly.kernel.settings import Settings

REPO_WEB_DIST = Path(__file__).resolve().parents[4] / "web" / "dist"


class Process:
    """The ASGI app of one process: the named services behind the gateway (all five for `gatherly up`)."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] | None = None,
        *,
        web_dir: Path | None = None,
        serve_web: bool = True,
        demo: bool = False,
    ) -> None:
        self.settings = settings
        names = list(services or ALL)
        jwks_client = None
        if "users" in names and not settings.jwks_url:
            # Tokens are verified against the users service's JWKS, reached in-process through the gateway.
            jwks_client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self), base_url="http://gatherly.internal"
            )
        self.platform: Platform = build_platform(settings, names, jwks_client=jwks_client)
        self.hosts = [ServiceHost(ALL[name], self.platform) for name in names]
        for host in self.hosts:
            install_boundary(host.app, host.name, settings)
        self.gateway = Gateway(self.hosts, self.platform, web_dir=web_dir or REPO_WEB_DIST, serve_web=serve_web)
        self.asgi = front_door(self.gateway, settings)
        if demo:
            self.gateway.on_started.append(lambda: seed_demo(self))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    def host(self, name: str) -> ServiceHost:
        return next(h for h in self.hosts if h.name == name)
