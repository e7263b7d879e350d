"""A local push service for the notifications tests: it does what a push service and a browser do, checking the
VAPID JWT (RFC 8292) against the published key and decrypting the payload (RFC 8291, with http_ece) with the
subscription's own browser keys; it keeps what it read."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

VAPID_HEADER = re.compile(r"vapid t=(?P<token>[^,\s]+),\s*k=(?P<key>[A-Za-z0-9_-]+)")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """A browser's side of a subscription: its key pair and auth secret (RFC 8291)."""

    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)


@dataclass
class PushService:
    """Receives pushes at /push/<name>: verifies the VAPID JWT, decrypts with that subscription's browser keys,
    keeps what it read; names starting with `gone` answer 410 like an expired subscription, `missing` 404 like an
    unknown one, `flaky` 500 to their first two pushes (a push service having a bad moment). With a `delay`, it
    takes that long before accepting a push, and accepts it only if the sender is still connected then (a push
    service takes a message with its 201, not before)."""

    browsers: dict[str, Browser] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    origin: str = ""
    vapid_public_key: str = ""
    delay: float = 0.0

    async def receive(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.startswith("gone"):
            return Response(status_code=410)
        if name.startswith("missing"):
            return Response(status_code=404)
        if name.startswith("flaky") and self.failed.get(name, 0) < 2:
            self.failed[name] = self.failed.get(name, 0) + 1
            return Response(status_code=500)
        match = VAPID_HEADER.fullmatch(request.headers.get("authorization", ""))
        if match is None or match["key"] != self.vapid_public_key:
            self.refused.append(f"{name}: no VAPID or another key")
            return Response(status_code=401)
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(match["key"]))
        try:
            claims = jwt.decode(match["token"], key, algorithms=["ES256"], audience=self.origin)
        except jwt.InvalidTokenError as error:
            self.refused.append(f"{name}: {error}")
            return Response(status_code=403)
        assert claims["sub"].startswith("mailto:") and claims["exp"] > time.time()
        assert request.headers["content-encoding"] == "aes128gcm"
        browser = self.browsers[name]
        plain = http_ece.decrypt(
            await request.body(), private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
        )
        if self.delay:
            await asyncio.sleep(self.delay)  # the push service at work, not a wait for something
            if await request.is_disconnected():
                return Response(status_code=503)
        self.received.append((name, json.loads(plain)))
        return Response(status_code=201)

    def subscription(self, name: str) -> dict[str, Any]:
        """The PushSubscription JSON a browser would post for `name` (its keys made here)."""
        browser = self.browsers.setdefault(name, Browser())
        return {
            "endpoint": f"{self.origin}/push/{name}",
            "keys": {"p256dh": browser.p256dh, "auth": b64url(browser.auth)},
        }


@asynccontextmanager
async def serving(service: PushService) -> AsyncIterator[PushService]:
    """`service` listening on a free port of 127.0.0.1 (its `origin` set) until the block ends."""
    app = Starlette(routes=[Route("/push/{name}", service.receive, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "the push service is not listening"
        await asyncio.sleep(0.05)
    service.origin = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield service
    finally:
        server.should_exit = True
        await task
