"""Token verification against a JWKS: what passes, what is refused, and key rotation."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gatherly.kernel.auth import StaticJwksSource, TokenVerifier
from gatherly.kernel.errors import Unauthorized, Unavailable

ISSUER, AUDIENCE = "https://id.example.org", "gatherly"


class KeySet:
    """A signer with rotating Ed25519 keys and the JWKS it publishes."""

    def __init__(self) -> None:
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.fetches = 0
        self.rotate()

    def rotate(self) -> str:
        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = Ed25519PrivateKey.generate()
        self.current = kid
        return kid

    async def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "EdDSA"})
        return {"keys": keys}

    def token(self, kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, **claims}
        kid = kid or self.current
        return jwt.encode(body, self.keys[kid], algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def keys() -> KeySet:
    return KeySet()


@pytest.fixture
def verifier(keys: KeySet) -> TokenVerifier:
    return TokenVerifier(StaticJwksSource(keys.jwks), issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=0)


async def test_a_well_signed_token_names_its_user(keys: KeySet, verifier: TokenVerifier) -> None:
    principal = await verifier.verify(keys.token(sub="ann"))
    assert principal.user_id == "ann"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 3600},
        {"aud": "someone-else"},
        {"iss": "https://evil.example.org"},
    ],
    ids=["expired", "wrong-audience", "wrong-issuer"],
)
async def test_tokens_with_wrong_claims_are_refused(
    keys: KeySet, verifier: TokenVerifier, claims: dict[str, Any]
) -> None:
    with pytest.raises(Unauthorized):
        await verifier.verify(keys.token(**claims))


async def test_a_token_without_an_expiry_is_refused(keys: KeySet, verifier: TokenVerifier) -> None:
    token = jwt.encode(
        {"sub": "ann", "iss": ISSUER, "aud": AUDIENCE},
        keys.keys[keys.current],
        algorithm="EdDSA",
        headers={"kid": keys.current},
    )
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_an_unsigned_alg_none_token_is_refused(keys: KeySet, verifier: TokenVerifier) -> None:
    header = {"alg": "none", "kid": keys.current, "typ": "JWT"}
    body = {"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600}
    with pytest.raises(Unauthorized):
        await verifier.verify(f"{_b64(header)}.{_b64(body)}.")


async def test_a_tampered_token_is_refused(keys: KeySet, verifier: TokenVerifier) -> None:
    header, _, signature = keys.token(sub="ann").split(".")
    forged = _b64({"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600})
    with pytest.raises(Unauthorized):
        await verifier.verify(f"{header}.{forged}.{signature}")


async def test_a_token_signed_by_a_stranger_is_refused(keys: KeySet, verifier: TokenVerifier) -> None:
    stranger = KeySet()
    stranger.current = keys.current  # claims a kid we know, signed with another key
    stranger.keys = {keys.current: Ed25519PrivateKey.generate()}
    with pytest.raises(Unauthorized):
        await verifier.verify(stranger.token())


async def test_an_hmac_token_made_with_the_public_key_is_refused(keys: KeySet, verifier: TokenVerifier) -> None:
    # The classic algorithm-confusion attack: HS256 "signed" with the published public key.
    public = (await keys.jwks())["keys"][0]["x"]
    token = jwt.encode(
        {"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600},
        public,
        algorithm="HS256",
        headers={"kid": keys.current},
    )
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_garbage_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthorized):
        await verifier.verify("not-a-token")


async def test_a_rotated_key_is_picked_up_and_the_old_one_still_verifies(keys: KeySet, verifier: TokenVerifier) -> None:
    old_token = keys.token(sub="ann")
    await verifier.verify(old_token)
    keys.rotate()
    new_token = keys.token(sub="bob")
    assert (await verifier.verify(new_token)).user_id == "bob"  # unknown kid → JWKS fetched again
    assert (await verifier.verify(old_token)).user_id == "ann"


async def test_keys_are_cached_between_verifications(keys: KeySet, verifier: TokenVerifier) -> None:
    for _ in range(5):
        await verifier.verify(keys.token())
    assert keys.fetches == 1


async def test_unknown_key_ids_do_not_hammer_the_key_server(keys: KeySet) -> None:
    verifier = TokenVerifier(StaticJwksSource(keys.jwks), issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=60)
    await verifier.verify(keys.token())
    stranger = KeySet()
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await verifier.verify(_with_kid(stranger, "nope"))
    assert keys.fetches == 1


def _with_kid(keys: KeySet, kid: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60},
        keys.keys[keys.current],
        algorithm="EdDSA",
        headers={"kid": kid},
    )


@pytest.mark.parametrize("subject", ["", "   "])
async def test_a_token_without_a_subject_is_refused(keys: KeySet, verifier: TokenVerifier, subject: str) -> None:
    with pytest.raises(Unauthorized, match="names no user"):
        await verifier.verify(keys.token(sub=subject))


class FlakyKeyServer:
    """Serves the key set until it goes down."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.down = False

    async def jwks(self) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("key server unreachable")
        return await self.keys.jwks()


async def test_known_keys_keep_verifying_while_the_key_server_is_down(keys: KeySet) -> None:
    server = FlakyKeyServer(keys)
    verifier = TokenVerifier(
        StaticJwksSource(server.jwks), issuer=ISSUER, audience=AUDIENCE, cache_seconds=0, min_refetch_seconds=0
    )
    await verifier.verify(keys.token(sub="ann"))
    server.down = True
    # The cache has expired (cache_seconds=0), the refetch fails: the key known from before still serves.
    assert (await verifier.verify(keys.token(sub="ann"))).user_id == "ann"


async def test_a_token_needing_an_unknown_key_while_the_key_server_is_down_is_a_503_not_a_401(
    keys: KeySet,
) -> None:
    server = FlakyKeyServer(keys)
    verifier = TokenVerifier(StaticJwksSource(server.jwks), issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=0)
    await verifier.verify(keys.token())
    keys.rotate()
    server.down = True
    with pytest.raises(Unavailable) as raised:
        await verifier.verify(keys.token())
    assert raised.value.status == 503


class GatedKeyServer:
    """A key server whose answers wait for the test to open the gate: concurrent requests really overlap."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()
        self.down = False

    async def jwks(self) -> dict[str, Any]:
        self.asked.set()
        await self.gate.wait()
        if self.down:
            raise ConnectionError("key server unreachable")
        return await self.keys.jwks()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_hundred_requests_needing_an_unknown_key_fetch_the_key_set_once(keys: KeySet) -> None:
    server = GatedKeyServer(keys)
    verifier = TokenVerifier(StaticJwksSource(server.jwks), issuer=ISSUER, audience=AUDIENCE)
    waiting = [asyncio.create_task(verifier.verify(keys.token(sub=f"user-{n}"))) for n in range(100)]
    await asyncio.sleep(0)  # every request reaches the fetch before the key server answers
    server.gate.set()
    principals = await asyncio.gather(*waiting)
    assert {p.user_id for p in principals} == {f"user-{n}" for n in range(100)}
    assert keys.fetches == 1


async def test_a_request_arriving_while_the_key_set_is_being_fetched_waits_for_that_fetch(keys: KeySet) -> None:
    # Seen in the browser: right after logging in, two requests with a token of a key not yet known; the second one
    # came once the first one's fetch had started and got 503 instead of waiting for it.
    server = GatedKeyServer(keys)
    verifier = TokenVerifier(StaticJwksSource(server.jwks), issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=5)
    first = asyncio.create_task(verifier.verify(keys.token(sub="ann")))
    await server.asked.wait()  # the key server is being asked
    second = asyncio.create_task(verifier.verify(keys.token(sub="bob")))
    await asyncio.sleep(0)
    server.gate.set()
    assert [p.user_id for p in await asyncio.gather(first, second)] == ["ann", "bob"]
    assert keys.fetches == 1


async def test_a_key_dropped_from_the_key_set_stops_verifying_at_the_next_fetch(keys: KeySet) -> None:
    clock = FakeClock()
    verifier = TokenVerifier(
        StaticJwksSource(keys.jwks), issuer=ISSUER, audience=AUDIENCE, cache_seconds=60, monotonic=clock
    )
    old_kid = keys.current
    old_token = keys.token(sub="ann")
    await verifier.verify(old_token)  # verified, and cached
    keys.rotate()
    del keys.keys[old_kid]  # the issuer retires the old key (e.g. it leaked)
    clock.now += 61
    with pytest.raises(Unauthorized, match="unknown key"):
        await verifier.verify(old_token)


async def test_a_removed_key_is_trusted_no_longer_than_the_key_sets_max_age_while_the_server_is_down(
    keys: KeySet,
) -> None:
    server = FlakyKeyServer(keys)
    clock = FakeClock()
    verifier = TokenVerifier(
        StaticJwksSource(server.jwks),
        issuer=ISSUER,
        audience=AUDIENCE,
        cache_seconds=60,
        max_age_seconds=600,
        monotonic=clock,
    )
    token = keys.token(sub="ann")
    await verifier.verify(token)
    server.down = True  # from here on nobody can tell us the key was removed
    clock.now += 300
    assert (await verifier.verify(token)).user_id == "ann"  # refetch fails, the key set is 300 s old: still trusted
    clock.now += 301
    with pytest.raises(Unavailable):
        await verifier.verify(token)  # 601 s without a successful fetch: fail closed
    server.down = False
    clock.now += 10
    assert (await verifier.verify(token)).user_id == "ann"  # the key server answers again, the key is still there


async def test_a_token_needing_an_unknown_key_after_a_failed_fetch_stays_a_503(keys: KeySet) -> None:
    server = FlakyKeyServer(keys)
    clock = FakeClock()
    verifier = TokenVerifier(
        StaticJwksSource(server.jwks), issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=60, monotonic=clock
    )
    await verifier.verify(keys.token())
    keys.rotate()
    server.down = True
    clock.now += 61
    for _ in range(3):  # the first asks the key server; the others are inside min_refetch_seconds
        with pytest.raises(Unavailable):
            await verifier.verify(keys.token())


@pytest.mark.parametrize("typ", ["id+jwt", "logout+jwt", "JOSE"])
async def test_a_token_of_another_type_is_refused(keys: KeySet, verifier: TokenVerifier, typ: str) -> None:
    token = jwt.encode(
        {"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600},
        keys.keys[keys.current],
        algorithm="EdDSA",
        headers={"kid": keys.current, "typ": typ},
    )
    with pytest.raises(Unauthorized, match="not an access token"):
        await verifier.verify(token)


@pytest.mark.parametrize("typ", ["at+jwt", "JWT", None])
async def test_access_token_types_are_accepted(keys: KeySet, verifier: TokenVerifier, typ: str | None) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"sub": "ann", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600},
        keys.keys[keys.current],
        algorithm="EdDSA",
        headers={"kid": keys.current, "typ": typ},  # PyJWT leaves `typ` out when it is None
    )
    assert (await verifier.verify(token)).user_id == "ann"


class CountingDecode:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.decode = jwt.decode
        monkeypatch.setattr(jwt, "decode", self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.decode(*args, **kwargs)


async def test_a_verified_token_is_not_verified_again(
    keys: KeySet, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = CountingDecode(monkeypatch)
    token = keys.token(sub="ann")
    for _ in range(5):
        assert (await verifier.verify(token)).user_id == "ann"
    assert decode.calls == 1


async def test_the_verified_token_cache_is_bounded(keys: KeySet, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(StaticJwksSource(keys.jwks), issuer=ISSUER, audience=AUDIENCE, cache_size=2)
    decode = CountingDecode(monkeypatch)
    first, second, third = (keys.token(sub=name) for name in ("ann", "bob", "cat"))
    for token in (first, second, third, first):
        await verifier.verify(token)
    assert decode.calls == 4  # `first` was evicted by `third` and verified again


async def test_a_cached_token_past_its_expiry_is_verified_again(keys: KeySet, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(StaticJwksSource(keys.jwks), issuer=ISSUER, audience=AUDIENCE, leeway_seconds=0)
    decode = CountingDecode(monkeypatch)
    issued = time.time()
    token = keys.token(sub="ann", exp=int(issued) + 60)
    await verifier.verify(token)
    await verifier.verify(token)
    assert decode.calls == 1
    monkeypatch.setattr(time, "time", lambda: issued + 120)
    await verifier.verify(token)  # (PyJWT reads its own clock, so here only the cache sees the token as expired)
    assert decode.calls == 2
