"""The users service's cryptography: argon2id password hashes (off the event loop), the common-password list,
and the Ed25519 keys that sign access tokens. Rules about tokens (expiry, rotation, reuse) are in domain.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gatherly.kernel.settings import Settings
from gatherly.users.domain import normalize_password
from gatherly.users.store import StoredKey

# --- passwords --------------------------------------------------------------------------------------------------

# Each argon2 hash holds up to `memory_kib` of RAM for its duration: bounding how many run at once bounds the
# memory a burst of logins can take (64 MiB x 4), whatever the thread pool's size.
CONCURRENT_HASHES = 4


class Passwords:
    """argon2id with the parameters from settings. Every hash records its parameters, so hashes made with
    older (weaker) ones still verify and are upgraded at the next successful login."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost=settings.password_memory_kib,
            parallelism=settings.password_parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(CONCURRENT_HASHES)
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, normalize_password(password))

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` matches. With no stored hash (unknown email, outside identity) a decoy hash is
        checked instead, so the answer takes as long as for a real account."""
        candidate = stored_hash or await self.decoy()
        async with self._slots:
            matches = await asyncio.to_thread(self._matches, candidate, normalize_password(password))
        return matches and stored_hash is not None

    def _matches(self, stored_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)

    async def decoy(self) -> str:
        if self._decoy is None:
            self._decoy = await self.hash(str(uuid.uuid4()))
        return self._decoy


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower-case), read once."""
    text = resources.files("gatherly.users").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


# --- signing keys -----------------------------------------------------------------------------------------------

ALGORITHM = "EdDSA"


def new_signing_key(now: datetime, activates_at: datetime | None = None) -> StoredKey:
    """A fresh Ed25519 key. Its `kid` is random, not derived from the key, so it says nothing about it."""
    private = Ed25519PrivateKey.generate()
    kid = uuid.uuid4().hex
    public_jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return StoredKey(
        kid=kid,
        algorithm=ALGORITHM,
        private_key=pem,
        public_jwk={**public_jwk, "kid": kid, "use": "sig", "alg": ALGORITHM},
        created_at=now,
        activates_at=activates_at or now,
        retired_at=None,
    )


def signing_key_for(keys: list[StoredKey], now: datetime) -> StoredKey:
    """The newest key already active (a rotated-in key waits until every verifier can have fetched it)."""
    active = [k for k in keys if k.retired_at is None and k.activates_at <= now]
    if active:
        return max(active, key=lambda k: k.activates_at)
    # Nothing active yet (clocks of two machines disagree a little): the one closest to active, rather than
    # no login at all.
    return min((k for k in keys if k.retired_at is None), key=lambda k: k.activates_at)


def retirable(keys: list[StoredKey], now: datetime, token_lifetime: timedelta) -> list[str]:
    """Keys no unexpired token can name: superseded by an active key longer than a token lives."""
    live = sorted((k for k in keys if k.retired_at is None), key=lambda k: k.activates_at)
    retire: list[str] = []
    for older, newer in itertools.pairwise(live):
        if newer.activates_at + token_lifetime <= now:
            retire.append(older.kid)
    return retire


class Signer:
    """Issues access tokens. Parsed private keys are cached by kid (parsing PEM costs more than signing)."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.effective_issuer
        self.audience = settings.jwt_audience
        self.lifetime = timedelta(seconds=settings.access_token_ttl_seconds)
        self._parsed: dict[str, Ed25519PrivateKey] = {}

    def access_token(self, key: StoredKey, user_id: str, now: datetime, *, session_id: str, token_id: str) -> str:
        """Deterministic given its inputs (Ed25519 signatures are), so a refresh repeated within the grace window
        can give the very same token again. `sid` names the refresh-token family: the device's session."""
        private = self._parsed.get(key.kid)
        if private is None:
            loaded = serialization.load_pem_private_key(key.private_key.encode(), None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"signing key {key.kid} is not an Ed25519 key")
            private = self._parsed[key.kid] = loaded
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": int(now.timestamp()),
            "exp": int((now + self.lifetime).timestamp()),
            "jti": token_id,
            "sid": session_id,
        }
        return jwt.encode(claims, private, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "at+jwt"})


def jwks(keys: list[StoredKey]) -> dict[str, Any]:
    return {"keys": [k.public_jwk for k in keys if k.retired_at is None]}
