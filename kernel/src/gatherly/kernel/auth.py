"""Access-token verification against a JWKS (cached, refreshed on an unknown key id), a cache of verified tokens,
the refusal of revoked subjects (deleted or locked accounts), and the FastAPI dependencies that give routes their
caller."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
import jwt
from cachetools import LRUCache
from fastapi import Depends, Request
from jwt import PyJWK

from gatherly.kernel.errors import Unauthorized, Unavailable
from gatherly.kernel.resilience import Resilience
from gatherly.kernel.revocation import RevokedSubjects

ALLOWED_ALGORITHMS = ("EdDSA", "RS256", "ES256")
# `at+jwt` is RFC 9068's access-token type (what the users service issues); plain `JWT` is what most OIDC
# providers put on theirs. Anything else (an ID token marked `id+jwt`, a logout token ...) is refused.
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt", "jwt")


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


@dataclass(frozen=True)
class _Verified:
    """A token that passed every check, remembered until it expires: verifying is an Ed25519 signature check
    plus JSON parsing on every request otherwise, for the same token a client sends again and again."""

    principal: Principal
    kid: str
    key: PyJWK  # the key object that verified it: replaced or removed from the key set → verify again
    expires_at: float  # the token's `exp` (wall clock, seconds)


class TokenVerifier:
    """Verifies signature, `alg` (never `none`, never a symmetric algorithm), `typ`, `iss`, `aud`, `exp` and `sub`.

    The key set (JWKS):
    - is refetched when older than `cache_seconds`, and when a token names an unknown `kid` (at most once per
      `min_refetch_seconds`, so bad tokens cannot flood the key server). Refetches are single-flight: requests
      that need one while it runs wait for that fetch instead of starting their own.
    - a refetch that succeeds replaces the key set: a key it lacks is no longer trusted, at once.
    - while the key server cannot be reached, the keys of the last successful fetch keep verifying for at most
      `max_age_seconds` after that fetch (a key removed meanwhile stays trusted no longer than that); after it
      every token gets 503 (fail closed). A token that needs a key not yet known gets 503 too: try again, the
      token is not to blame (401 would log people out).

    Verified tokens are cached (bounded LRU of `cache_size`, keyed by the token's SHA-256) until their `exp`;
    a cache hit still passes the key-set rules above and only counts while the key that verified the token is
    the one the current key set holds for its `kid`, so the cache never trusts a token longer than a fresh
    verification would.

    Revoked subjects (`revoked`, kept up to date from the log by kernel/revocation.py): a token whose subject was
    deleted, is locked, or was unlocked after the token was issued gets 401, whether it was verified just now or
    found in the cache. The check is one dictionary lookup."""

    def __init__(
        self,
        source: JwksSource,
        *,
        issuer: str,
        audience: str,
        cache_seconds: float = 300.0,
        max_age_seconds: float = 900.0,
        min_refetch_seconds: float = 5.0,
        leeway_seconds: float = 10.0,
        cache_size: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
        revoked: RevokedSubjects | None = None,
    ) -> None:
        self.source = source
        self.issuer = issuer
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.max_age_seconds = max(max_age_seconds, cache_seconds)
        self.min_refetch_seconds = min_refetch_seconds
        self.leeway_seconds = leeway_seconds
        self._monotonic = monotonic
        self._keys: dict[str, PyJWK] = {}
        self._raw: dict[str, dict[str, Any]] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._tried_at = float("-inf")  # last attempt, successful or not
        self._failing = False  # the last attempt failed
        self._fetching: asyncio.Future[None] | None = None
        self._verified: LRUCache[bytes, _Verified] = LRUCache(maxsize=cache_size)
        self.revoked = revoked if revoked is not None else RevokedSubjects()

    async def _refresh(self) -> None:
        """Fetch the key set, once for everyone who asks while a fetch is under way."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        try:
            await asyncio.shield(fetching)
        finally:
            if fetching.done() and self._fetching is fetching:
                self._fetching = None

    async def _fetch(self) -> None:
        self._tried_at = self._monotonic()
        self._failing = True
        jwks = await self.source.fetch()
        keys: dict[str, PyJWK] = {}
        raw_keys: dict[str, dict[str, Any]] = {}
        for raw in jwks.get("keys", []):
            kid = raw.get("kid")
            if not kid or raw.get("use", "sig") != "sig":
                continue
            if self._raw.get(kid) == raw:
                keys[kid], raw_keys[kid] = self._keys[kid], raw  # unchanged: cached verifications stay valid
                continue
            try:
                keys[kid], raw_keys[kid] = PyJWK(raw), raw
            except jwt.PyJWTError:
                continue  # a key type this build cannot use is not a reason to reject the others
        self._keys, self._raw = keys, raw_keys
        self._fetched_at = self._monotonic()
        self._failing = False

    async def _key(self, kid: str) -> PyJWK | None:
        now = self._monotonic()
        age = now - self._fetched_at
        since_try = now - self._tried_at
        stale = age > self.cache_seconds and since_try > self.min_refetch_seconds
        # A fetch under way is joined, not judged: its attempt counts as failing only once it has failed.
        in_flight = self._fetching is not None
        if in_flight or stale or (kid not in self._keys and since_try > self.min_refetch_seconds):
            try:
                await self._refresh()
            except Exception as error:
                if kid in self._keys and self._monotonic() - self._fetched_at <= self.max_age_seconds:
                    return self._keys[kid]
                raise Unavailable("The keys that verify access tokens cannot be fetched right now.") from error
        elif age > self.max_age_seconds or (kid not in self._keys and self._failing):
            raise Unavailable("The keys that verify access tokens cannot be fetched right now.")
        return self._keys.get(kid)

    async def verify(self, token: str, *, deleted_ok: bool = False) -> Principal:
        """The token's principal, or Unauthorized. `deleted_ok` lets a deleted account's token through (still not a
        locked one's): for the few routes that tell a person about their own account's deletion."""
        principal = await self._verified_principal(token)
        if self.revoked.refuses(principal.user_id, principal.claims, deleted_ok=deleted_ok):
            raise Unauthorized("The account of this access token is locked or deleted; log in again.")
        return principal

    async def _verified_principal(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if time.time() < known.expires_at + self.leeway_seconds and await self._key(known.kid) is known.key:
                return known.principal
            self._verified.pop(digest, None)
        principal, kid, key = await self._verify(token)
        self._verified[digest] = _Verified(principal, kid, key, float(principal.claims["exp"]))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str, PyJWK]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthorized("The access token is malformed.") from error
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise Unauthorized("The access token's algorithm is not accepted.")
        # RFC 9068: access tokens say so in `typ`, so an ID token or another JWT of the issuer is not one.
        # Some providers (Cognito) send no `typ` at all; a token that names another type is refused.
        if "typ" in header and str(header["typ"]).lower() not in ACCESS_TOKEN_TYPES:
            raise Unauthorized("The token is not an access token.")
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
        return Principal(user_id=subject, claims=claims), kid, key


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


async def require_principal_even_if_deleted(request: Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("Send an access token: Authorization: Bearer <token>.")
    return await verifier_of(request).verify(token, deleted_ok=True)


CurrentUser = Annotated[Principal, Depends(require_principal)]
# Only for routes that tell people about their own account's deletion (its progress, asking again): every other
# route refuses a deleted account's tokens.
CurrentOrDeletedUser = Annotated[Principal, Depends(require_principal_even_if_deleted)]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
