"""OpenID Connect discovery and RFC 8414 metadata: the documents, and third-party libraries (PyJWT's PyJWKClient,
Authlib's metadata checks) that start from the issuer alone, fetch the keys through discovery over a real socket
(`gatherly up`'s front door) and verify an access token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

from gatherly.app.compose import Process
from gatherly.app.server import server_config
from gatherly.app.testing import RunningGatherly, sign_up
from gatherly.app.testing import test_settings as settings_for  # not test_*: pytest would collect it
from gatherly.kernel.testing import DB_BACKENDS, scratch_databases

from .conftest import CHEAP_HASHES, FAST_MAIL  # type: ignore[import-not-found]

# Tests share the module's running service (see conftest.py), so they run in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_discovery_document_names_the_issuer_its_keys_and_algorithm(users: RunningGatherly) -> None:
    response = await users.client.get("/.well-known/openid-configuration")
    assert response.status_code == 200 and response.headers["cache-control"] == "public, max-age=3600"
    document = response.json()
    issuer = users.settings.effective_issuer
    assert document["issuer"] == issuer
    assert document["jwks_uri"] == f"{users.settings.effective_public_url}/.well-known/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["EdDSA"]
    assert document["subject_types_supported"] == ["public"]
    assert {"iss", "sub", "aud", "exp", "sid"} <= set(document["claims_supported"])
    person = await sign_up(users)
    assert jwt.decode(person.access_token, options={"verify_signature": False})["iss"] == document["issuer"]


async def test_rfc_8414_metadata_names_the_same_issuer_and_keys_and_no_oauth_grant(users: RunningGatherly) -> None:
    """Gatherly has no authorization endpoint (tokens come from POST /api/auth/login), so OpenID Connect's document,
    which requires one, cannot be complete without a lie; RFC 8414's lets a server say it offers no grant using it."""
    response = await users.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200 and response.headers["cache-control"] == "public, max-age=3600"
    metadata = response.json()
    discovery = (await users.client.get("/.well-known/openid-configuration")).json()
    assert (metadata["issuer"], metadata["jwks_uri"]) == (discovery["issuer"], discovery["jwks_uri"])
    assert metadata["grant_types_supported"] == [] and "authorization_endpoint" not in metadata
    assert "authorization_endpoint" not in discovery  # none advertised that would answer 404


@pytest.mark.parametrize("backend", DB_BACKENDS)
async def test_a_jwt_library_configured_from_the_issuer_alone_verifies_an_access_token(
    tmp_path: Path, backend: str, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    issuer = f"http://127.0.0.1:{port}"
    async with scratch_databases(backend, tmp_path, ["users"]) as database_url:
        settings = settings_for(
            tmp_path / "data", database_url=database_url, public_url=issuer, port=port, **CHEAP_HASHES, **FAST_MAIL
        )
        server = uvicorn.Server(server_config(Process(settings, ["users"]), "127.0.0.1", port))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                assert not serving.done(), "the server stopped while starting"
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=issuer) as client:
                person = await sign_up(RunningGatherly(server.config.app, client))

                discovery = (await client.get("/.well-known/openid-configuration")).json()
                metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
            assert discovery["issuer"] == issuer
            # Authlib's RFC 8414 checks: the issuer and keys over a secure (here: loopback) transport, and no
            # authorization endpoint needed, since no grant that uses one is offered. Its OpenID Connect checks
            # refuse the discovery document for lacking one: what the RFC 8414 document is for.
            checked = AuthorizationServerMetadata(metadata)
            checked.validate_issuer()
            checked.validate_jwks_uri()
            checked.validate_authorization_endpoint()
            checked.validate_grant_types_supported()
            with pytest.raises(ValueError, match="authorization_endpoint"):
                OpenIDProviderMetadata(discovery).validate_authorization_endpoint()
            assert metadata["jwks_uri"] == discovery["jwks_uri"]
            # From here on only the library talks to the server (urllib, in a thread: the server runs on this loop).
            keys = jwt.PyJWKClient(discovery["jwks_uri"])
            key = await asyncio.to_thread(keys.get_signing_key_from_jwt, person.access_token)
            claims = jwt.decode(
                person.access_token,
                key,
                algorithms=discovery["id_token_signing_alg_values_supported"],
                issuer=discovery["issuer"],
                audience=settings.jwt_audience,
            )
            assert claims["sub"] == person.user_id
            forged = person.access_token[:-4] + ("AAAA" if not person.access_token.endswith("AAAA") else "BBBB")
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(forged, key, algorithms=["EdDSA"], issuer=issuer, audience=settings.jwt_audience)
        finally:
            server.should_exit = True
            await serving
