"""Access-token verification against a JWKS (cached, refreshed on an unknown key id) and FastAPI dependencies."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from jwt import PyJWK

from gatherly.kernel.errors import Unauthorized, Unavailable
from gatherly.kernel.resilience import Resilience

ALLOWED_ALGORITHMS = ("EdDSA", "RS256", "ES256")


class JwksSource(Protocol):
    async def fetch(self) -> dict[str, Any]:
        """The current JSON Web Key Set."""
        ...


class HttpJwksSource:
    """Fetches a JWKS over HTTP (retried, behind the "jwks" circuit breaker)."""

    def __init__(self, url: str, client: httpx.AsyncClient, resilience: Resilience) -> None:
        self.url = url
        self.client = client
        self.resilience = resilience

    async def fetch(self) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            response = await self.client.get(self.url, timeout=5.0)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        return await self.resilience.call("jwks", get, retry_on=httpx.HTTPError)


class StaticJwksSource:
    """A key set held in memory: tests, and a signer verifying its own tokens."""

    def __init__(self, jwks: dict[str, Any] | Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._jwks = jwks

    async def fetch(self) -> dict[str, Any]:
        if callable(self._jwks):
            return await self._jwks()
        return self._jwks


@dataclass(frozen=True)
class Principal:
    """Who is calling: `user_id` is the token's subject."""

    user_id: str
    claims: dict[str, Any] = field(default_factory=dict)


class TokenVerifier:
    """Verifies signature, `alg` (never `none`, never a symmetric algorithm), `iss`, `aud`, `exp` and `sub`.

    Keys are cached for `cache_seconds`; a token with an unknown `kid` triggers a refetch (at most once
    per `min_refetch_seconds`) so a key rotation is picked up at once without letting bad tokens flood
    the key server. While the key server cannot be reached, keys already known keep verifying; a token
    that needs a key not yet known gets 503 (try again), not 401 (the token is not to blame)."""

    def __init__(
        self,
        source: JwksSource,
        *,
        issuer: str,
        audience: str,
        cache_seconds: float = 300.0,
        min_refetch_seconds: float = 5.0,
        leeway_seconds: float = 10.0,
    ) -> None:
        self.source = source
        self.issuer = issuer
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.leeway_seconds = leeway_seconds
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")

    async def _refresh(self) -> None:
        jwks = await self.source.fetch()
        keys: dict[str, PyJWK] = {}
        for raw in jwks.get("keys", []):
            kid = raw.get("kid")
            if not kid or raw.get("use", "sig") != "sig":
                continue
            try:
                keys[kid] = PyJWK(raw)
            except jwt.PyJWTError:
                continue  # a key type this build cannot use is not a reason to reject the others
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> PyJWK | None:
        age = time.monotonic() - self._fetched_at
        if age > self.cache_seconds or (kid not in self._keys and age > self.min_refetch_seconds):
            try:
                await self._refresh()
            except Exception as error:
                if kid in self._keys:
                    return self._keys[kid]
                raise Unavailable("The keys that verify access tokens cannot be fetched right now.") from error
        return self._keys.get(kid)

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthorized("The access token is malformed.") from error
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise Unauthorized("The access token's algorithm is not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("The access token names no key.")
        key = await self._key(kid)
        if key is None:
            raise Unauthorized("The access token was signed by an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthorized("The access token has expired.") from error
        except jwt.PyJWTError as error:
            raise Unauthorized("The access token is not valid.") from error
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthorized("The access token names no user.")
        return Principal(user_id=subject, claims=claims)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def verifier_of(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.context.verifier
    return verifier


async def optional_principal(request: Request) -> Principal | None:
    """The caller when a token is sent (an invalid one is still a 401), None when anonymous."""
    token = bearer_token(request)
    if token is None:
        return None
    return await verifier_of(request).verify(token)


async def require_principal(request: Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("Send an access token: Authorization: Bearer <token>.")
    return await verifier_of(request).verify(token)


async def require_principal_header_or_query(request: Request) -> Principal:
    """For EventSource, which cannot send headers: the token may come as `?access_token=`."""
    token = bearer_token(request) or request.query_params.get("access_token")
    if not token:
        raise Unauthorized("Send an access token.")
    return await verifier_of(request).verify(token)


CurrentUser = Annotated[Principal, Depends(require_principal)]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
