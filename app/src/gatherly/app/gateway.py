"""The all-in-one front door: one origin, API prefixes mapped to services, the web app at `/`."""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatherly.app import devmail
from gatherly.kernel.catalog import asyncapi
from gatherly.kernel.limits import MAX_PATH_BYTES, path_bytes
from gatherly.kernel.runtime import ServiceHost
from gatherly.kernel.settings import Settings, StorageBackend
from gatherly.kernel.web import install_error_handlers, problem

log = structlog.get_logger(__name__)

# api.md: each top-level prefix belongs to exactly one service.
PREFIXES: dict[str, tuple[str, ...]] = {
    "users": (
        "/api/auth",
        "/api/users",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ),
    "groups": ("/api/groups",),
    "events": ("/api/events", "/api/calendar"),
    "notifications": ("/api/notifications", "/api/push"),
    "images": ("/api/images", "/media"),
}

PLACEHOLDER = Path(__file__).parent / "static"
SWAGGER_UI = Path(str(importlib.resources.files("fastapi_offline") / "static"))
# No inline script or style of our own, so the page runs under the CSP every response carries.
DOCS_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Gatherly API</title>'
    '<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">'
    '<link rel="icon" href="/api/docs/assets/favicon.png"></head>'
    '<body><div id="swagger-ui"></div><script src="/api/docs/assets/swagger-ui-bundle.js"></script>'
    '<script src="/api/docs/init.js"></script></body></html>'
)
DOCS_SCRIPT = (
    'window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true,'
    " validatorUrl: null, presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout'});\n"
)
# Every response: scripts, styles and fetches from this origin only, no framing (clickjacking), no sniffing. Images
# may also come from the map tiles' origin (GATHERLY_MAP_TILES_URL), when one is set.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:{images}; "
    "connect-src 'self'{uploads}; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; "
    "worker-src 'self'; manifest-src 'self'"
)


def _origin(url: str) -> str:
    """` <scheme>://<host>` of a plain http(s) URL, else "": a setting cannot add other sources or directives."""
    parts = urlsplit(url.replace("{s}", "a"))
    # Leaflet's {s} picks a subdomain: allow every one of them.
    host = parts.netloc.replace("a.", "*.", 1) if "{s}." in url else parts.netloc
    plain = parts.scheme in ("http", "https") and re.fullmatch(r"[A-Za-z0-9.*-]+(:[0-9]+)?", host)
    return f" {parts.scheme}://{host}" if plain else ""


def security_headers(tiles_url: str = "", storage_urls: Sequence[str] = ()) -> list[tuple[bytes, bytes]]:
    """The headers of every response. Map tiles' origin joins img-src; an S3 storage's origins join img-src (the
    variants browsers show) and connect-src (the presigned uploads browsers send there)."""
    storage = "".join(dict.fromkeys(_origin(url) for url in storage_urls if url))
    policy = CSP.format(images=_origin(tiles_url) + storage, uploads=storage)
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]


def storage_origins(settings: Settings) -> list[str]:
    """Where browsers upload pictures and load their variants when they are not served by Gatherly itself."""
    if settings.storage_backend != StorageBackend.S3:
        return []
    if settings.s3_endpoint_url:
        return [settings.s3_endpoint_url, settings.s3_public_url]
    # AWS itself: presigned URLs name the bucket's global or regional host.
    bucket = settings.s3_bucket
    return [
        f"https://{bucket}.s3.amazonaws.com",
        f"https://{bucket}.s3.{settings.s3_region}.amazonaws.com",
        settings.s3_public_url,
    ]


SECURITY_HEADERS = security_headers()


class SecurityHeaders:
    """Pure ASGI middleware adding security headers to every HTTP response (a service's own value wins)."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = SECURITY_HEADERS) -> None:
        self.app = app
        self.headers = list(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def front_door(app: ASGIApp, settings: Settings) -> ASGIApp:
    """What every process puts in front of its gateway: security headers, then CORS (preflights answered here,
    for the public origin and the configured ones)."""
    cors = CORSMiddleware(
        app,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After", "Location"],
        max_age=600,
    )
    return SecurityHeaders(cors, security_headers(settings.map_tiles_url, storage_origins(settings)))


def merged_openapi(hosts: Sequence[ServiceHost]) -> dict[str, Any]:
    """The documents of the hosted services as one (each prefix belongs to one service, so paths never clash)."""
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Gatherly API",
            "version": "1",
            "description": "Errors are application/problem+json (the Problem schema). Events: /api/asyncapi.json.",
        },
        "tags": [{"name": host.name, "description": f"The {host.definition.title}."} for host in hosts],
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    }
    schemas: dict[str, Any] = merged["components"]["schemas"]
    defined_by: dict[str, str] = {}
    for host in hosts:
        document = host.app.openapi()
        merged["paths"].update(document.get("paths", {}))
        merged["components"]["securitySchemes"].update(document.get("components", {}).get("securitySchemes", {}))
        # Schemas are named by their class: two services' shapes of one name would otherwise leave one of them
        # described by the other's schema. A shape several services share (Problem, LocationBody) is one class.
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(
                    f"the {defined_by[name]} and {host.name} services define different schemas named {name}: "
                    "rename one, or share one class"
                )
            schemas[name] = schema
            defined_by.setdefault(name, host.name)
    return merged


class Gateway:
    """An ASGI app: requests under a service's prefixes go to that service's app unchanged; the rest
    (health of the whole process, merged OpenAPI, dev mail, the web app) is served here. Starting and stopping
    the process is the `lifespan` it is given (the composition root's, gatherly.app.compose)."""

    def __init__(
        self,
        hosts: Sequence[ServiceHost],
        settings: Settings,
        *,
        lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
        web_dir: Path | None = None,
        serve_web: bool = True,
    ) -> None:
        self.hosts = list(hosts)
        self.settings = settings
        self.serve_web = serve_web
        self.lifespan = lifespan
        by_name = {host.name: host for host in self.hosts}
        routes = [
            (prefix, by_name[name].app) for name, prefixes in PREFIXES.items() if name in by_name for prefix in prefixes
        ]
        # Longest prefix first, so a more specific prefix always wins.
        self.routes = sorted(routes, key=lambda route: len(route[0]), reverse=True)
        self.web_dir = web_dir if web_dir and (web_dir / "index.html").exists() else PLACEHOLDER
        self.local = self._build_local_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            for prefix, app in self.routes:
                if path == prefix or path.startswith(prefix + "/"):
                    await app(scope, receive, send)
                    return
        await self.local(scope, receive, send)

    def _build_local_app(self) -> FastAPI:
        # No redirect to the path without its trailing slash: it names the Host header's host (see kernel/boundary.py).
        app = FastAPI(
            title="Gatherly",
            lifespan=self.lifespan,
            openapi_url=None,
            docs_url=None,
            redoc_url=None,
            redirect_slashes=False,
        )
        install_error_handlers(app)
        hosts = self.hosts

        documents: dict[str, JSONResponse] = {}  # built at the first request, then the same every time

        # /openapi.json too: where FastAPI-style clients and tools look first.
        @app.get("/api/openapi.json", include_in_schema=False)
        @app.get("/openapi.json", include_in_schema=False)
        async def openapi() -> JSONResponse:
            if "openapi" not in documents:
                documents["openapi"] = JSONResponse(merged_openapi(hosts))
            return documents["openapi"]

        @app.get("/api/asyncapi.json", include_in_schema=False)
        async def events_catalog() -> JSONResponse:
            if "asyncapi" not in documents:
                documents["asyncapi"] = JSONResponse(asyncapi([host.definition for host in hosts]))
            return documents["asyncapi"]

        # Swagger UI from the installed package, not a CDN: the page works offline and under the strict CSP.
        app.mount("/api/docs/assets", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

        @app.get("/api/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return HTMLResponse(DOCS_PAGE)

        @app.get("/api/docs/init.js", include_in_schema=False)
        async def docs_script() -> Response:
            return Response(DOCS_SCRIPT, media_type="text/javascript")

        # What the web app needs to know at run time; no-cache, so a changed setting shows at the next start.
        @app.get("/config.json", include_in_schema=False)
        async def web_config() -> JSONResponse:
            config = {"map_tiles_url": self.settings.map_tiles_url, "map_attribution": self.settings.map_attribution}
            return JSONResponse(config, headers={"Cache-Control": "no-cache"})

        @app.get("/livez", include_in_schema=False)
        async def livez() -> dict[str, str]:
            return {"status": "alive"}

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> Response:
            # Each service's own checks (database, outbox, background tasks), not only whether it has started.
            reasons = [f"{h.name} ({reason})" for h in hosts if (reason := await h.context.readiness.problem())]
            if reasons:
                return problem(503, "not ready: " + "; ".join(reasons), title="Not ready")
            return JSONResponse({"status": "ready", "services": [h.name for h in hosts]})

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        if self.settings.dev_endpoints:
            app.include_router(devmail.router(self.settings.mail_dir))
            if self.settings.dev and not self.settings.is_loopback:
                log.warning(
                    "DEV MODE IS ON FOR A NON-LOOPBACK ADDRESS: /dev/mail shows every confirmation and password "
                    "reset link to anyone who can reach this port. Unset GATHERLY_DEV outside development.",
                    host=self.settings.host,
                )

        if not self.serve_web:
            return app
        web_dir = self.web_dir

        @app.get("/{path:path}", include_in_schema=False)
        async def web(path: str, request: Request) -> Response:
            if path.startswith("api/"):
                # The services' path limit (kernel/limits.py) holds here too: no answer echoes a path of any length.
                if path_bytes(request.scope) > MAX_PATH_BYTES:
                    return problem(414, f"The path is longer than {MAX_PATH_BYTES} bytes.")
                return problem(404, f"No API at /{path}.")
            candidate = built_file(web_dir, path)
            if candidate:
                # Hashed build assets never change; everything else (sw.js above all) is checked at each load, so
                # a new version of the app is noticed and offered.
                cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
                return FileResponse(candidate, headers={"Cache-Control": cache})
            # A single-page app: unknown paths get index.html and the client-side router decides.
            return FileResponse(web_dir / "index.html", headers={"Cache-Control": "no-cache"})

        return app


def built_file(web_dir: Path, path: str) -> Path | None:
    """The file of the built web app that `path` names, or None: an empty path, one outside `web_dir`, or one no
    file system takes (a NUL, a name longer than the system allows) is no file, so the app's router gets it."""
    if not path:
        return None
    try:
        candidate = (web_dir / path).resolve()
        return candidate if candidate.is_relative_to(web_dir.resolve()) and candidate.is_file() else None
    except (OSError, ValueError):  # ENAMETOOLONG and the like; ValueError: an embedded NUL
        return None
