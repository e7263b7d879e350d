"""An outside OIDC provider (issuer + JWKS URL + audience settings) instead of Gatherly's own tokens. The provider
is played by a local key pair behind a tiny JWKS server on 127.0.0.1, reached over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gatherly.app.testing import RunningGatherly, running_gatherly
from gatherly.users.store import reading

from .conftest import CHEAP_HASHES  # type: ignore[import-not-found]

ISSUER = "https://idp.example.test/realms/gatherly"
AUDIENCE = "gatherly-web"


class Provider:
    """The outside identity provider: signs tokens and serves its JWKS over HTTP."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = "idp-key-1"
        self.jwks_requests = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.jwks_requests += 1
                public = json.loads(OKPAlgorithm.to_jwk(provider.key.public_key()))
                body = json.dumps({"keys": [{**public, "kid": provider.kid, "use": "sig", "alg": "EdDSA"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/protocol/openid-connect/certs"

    def token(self, key: Ed25519PrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "idp|ann-42", "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, key or self.key, algorithm="EdDSA", headers={"kid": self.kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


@pytest.fixture
async def outside(tmp_path: Path, provider: Provider) -> AsyncIterator[RunningGatherly]:
    async with running_gatherly(
        tmp_path / "data",
        services=["users"],
        jwt_issuer=ISSUER,
        jwks_url=provider.url,
        jwt_audience=AUDIENCE,
        **CHEAP_HASHES,
    ) as running:
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_of_the_outside_provider_is_accepted_and_the_person_gets_a_profile(
    outside: RunningGatherly, provider: Provider
) -> None:
    token = provider.token(email="Ann@Example.org", email_verified=True, name="Ann from the IdP")
    me = await outside.client.get("/api/users/me", headers=_bearer(token))
    assert me.status_code == 200
    body = me.json()
    assert (body["id"], body["email"], body["display_name"]) == ("idp|ann-42", "ann@example.org", "Ann from the IdP")
    assert provider.jwks_requests >= 1  # verified against the provider's keys, fetched over HTTP

    patched = await outside.client.patch("/api/users/me", json={"city": "Lyon"}, headers=_bearer(token))
    assert patched.status_code == 200 and patched.json()["city"] == "Lyon"
    assert (await outside.client.get("/api/users/me", headers=_bearer(token))).json()["city"] == "Lyon"

    await outside.settle()
    records = await outside.process.platform.log.read("user")
    types = [r.headers["type"] for r in records]
    assert types == ["user.registered", "user.confirmed", "user.profile_updated", "user.profile_updated"]


async def test_tokens_the_outside_provider_did_not_issue_for_us_get_401(
    outside: RunningGatherly, provider: Provider
) -> None:
    assert (await outside.client.get("/api/users/me", headers=_bearer(provider.token()))).status_code == 200
    refused = {
        "wrong audience": provider.token(aud="another-client"),
        "wrong issuer": provider.token(iss="https://evil.example.test"),
        "expired": provider.token(exp=int(time.time()) - 3600),
        "wrong key": provider.token(key=Ed25519PrivateKey.generate()),
    }
    for case, token in refused.items():
        assert (await outside.client.get("/api/users/me", headers=_bearer(token))).status_code == 401, case


async def test_tokens_signed_with_gatherlys_own_keys_are_refused_when_an_outside_provider_is_configured(
    outside: RunningGatherly,
) -> None:
    jwks = (await outside.client.get("/.well-known/jwks.json")).json()
    (own_key,) = jwks["keys"]
    assert own_key["kid"] != "idp-key-1"
    async with reading(outside.process.host("users").context.db) as stores:
        (key,) = await stores.signing_keys.all()
    private = serialization.load_pem_private_key(key.private_key.encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    own_token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "exp": int(time.time()) + 300},
        private,
        algorithm="EdDSA",
        headers={"kid": key.kid},
    )
    assert (await outside.client.get("/api/users/me", headers=_bearer(own_token))).status_code == 401


async def test_with_an_outside_provider_this_service_publishes_no_discovery_document(outside: RunningGatherly) -> None:
    response = await outside.client.get("/.well-known/openid-configuration")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
