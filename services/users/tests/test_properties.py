"""Property-based tests of token and password handling (hypothesis)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gatherly.kernel.auth import StaticJwksSource, TokenVerifier
from gatherly.kernel.errors import InvalidInput, Unauthorized
from gatherly.kernel.settings import Settings
from gatherly.users.crypto import Passwords, Signer, common_passwords, jwks, new_signing_key
from gatherly.users.domain import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    LoginThrottle,
    check_password_policy,
    lockout_for,
    new_opaque_token,
    normalize_email,
    normalize_password,
    token_digest,
)

SETTINGS = Settings(password_time_cost=1, password_memory_kib=8, password_parallelism=1, jwt_issuer="https://id.test")
COMMON = common_passwords()
NOW = datetime.now(UTC)
KEY = new_signing_key(NOW)
SIGNER = Signer(SETTINGS)

# Printable text without surrogates; any script a person may type in.
passwords = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=140)


@given(passwords)
def test_the_policy_is_only_about_length_and_the_common_list(password: str) -> None:
    length = len(normalize_password(password))
    expected_ok = (
        MIN_PASSWORD_LENGTH <= length <= MAX_PASSWORD_LENGTH and normalize_password(password).lower() not in COMMON
    )
    try:
        check_password_policy(password, COMMON)
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted is expected_ok


@given(st.sampled_from(sorted(p for p in COMMON if len(p) >= MIN_PASSWORD_LENGTH)), st.randoms())
def test_any_casing_of_a_common_password_is_refused(password: str, random: Any) -> None:
    mixed = "".join(c.upper() if random.random() < 0.5 else c for c in password)
    with pytest.raises(InvalidInput):
        check_password_policy(mixed, COMMON)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(passwords.filter(lambda p: len(p) >= 1), passwords)
def test_a_hash_verifies_its_password_and_no_other(password: str, other: str) -> None:
    hasher = Passwords(SETTINGS)

    async def check() -> None:
        stored = await hasher.hash(password)
        assert stored.startswith("$argon2id$")
        assert password not in stored or len(password) < 4
        assert await hasher.verify(stored, password)
        assert await hasher.verify(stored, other) is (normalize_password(other) == normalize_password(password))

    asyncio.run(check())


@settings(max_examples=10, deadline=None)
@given(passwords)
def test_without_a_stored_hash_nothing_verifies(password: str) -> None:
    assert asyncio.run(Passwords(SETTINGS).verify(None, password)) is False


@given(st.integers(min_value=0, max_value=10_000))
def test_lockout_never_shrinks_with_more_failures_and_never_exceeds_fifteen_minutes(failures: int) -> None:
    this, then = lockout_for(failures), lockout_for(failures + 1)
    assert (this or timedelta(0)) <= (then or timedelta(0)) <= timedelta(minutes=15)


@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=10_000))
def test_a_locked_address_waits_at_least_a_second_and_at_most_the_lockout(failures: int, elapsed_ms: int) -> None:
    throttle = LoginThrottle(failures=failures).after_failure(NOW)
    wait = throttle.retry_after(NOW + timedelta(milliseconds=elapsed_ms))
    lockout = lockout_for(failures + 1)
    if wait is not None:
        assert lockout is not None and 1 <= wait <= lockout.total_seconds()


def test_opaque_tokens_are_url_safe_long_and_unique() -> None:
    tokens = {new_opaque_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) >= 43 and all(c.isalnum() or c in "-_" for c in t) for t in tokens)


@given(st.text(min_size=1), st.text(min_size=1))
def test_a_token_is_stored_as_a_digest_that_reveals_nothing_and_tells_tokens_apart(token: str, other: str) -> None:
    digest = token_digest(token)
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    assert digest == token_digest(token)
    assert (digest == token_digest(other)) is (token == other)
    assert len(token) < 8 or token not in digest


@given(st.emails())
def test_normalizing_an_email_address_is_idempotent(email: str) -> None:
    try:
        normalized = normalize_email(email)
    except InvalidInput:
        return  # hypothesis knows stranger addresses than we accept; refusing one is fine
    assert normalize_email(normalized) == normalized == normalized.lower()


# --- access tokens --------------------------------------------------------------------------------------------


def _verifier() -> TokenVerifier:
    return TokenVerifier(
        StaticJwksSource(jwks([KEY])), issuer=SETTINGS.effective_issuer, audience=SETTINGS.jwt_audience
    )


@given(st.text(min_size=1, max_size=64).filter(str.strip))
def test_an_issued_access_token_verifies_to_its_subject(user_id: str) -> None:
    token = SIGNER.access_token(KEY, user_id, datetime.now(UTC), session_id="s", token_id="t")
    principal = asyncio.run(_verifier().verify(token))
    assert principal.user_id == user_id
    assert jwt.get_unverified_header(token)["kid"] == KEY.kid


@given(st.data())
def test_changing_any_character_of_an_access_token_makes_it_invalid(data: st.DataObject) -> None:
    token = SIGNER.access_token(KEY, "ann", datetime.now(UTC), session_id="s", token_id="t")
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != token[position]]))
    forged = token[:position] + replacement + token[position + 1 :]
    try:
        principal = asyncio.run(_verifier().verify(forged))
    except Unauthorized:
        return
    # Base64url's last character may carry unused bits: a change there can decode to the very same bytes.
    assert principal.user_id == "ann" and _decoded(forged) == _decoded(token)


@given(
    st.dictionaries(
        st.sampled_from(["sub", "iss", "aud", "exp"]),
        st.one_of(st.text(max_size=10), st.integers(min_value=-(2**40), max_value=2**40), st.none()),
        min_size=1,
    )
)
def test_a_validly_signed_token_with_wrong_claims_is_refused(overrides: dict[str, Any]) -> None:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "sub": "ann",
        "iss": SETTINGS.effective_issuer,
        "aud": SETTINGS.jwt_audience,
        "exp": now + 600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    exp = claims.get("exp")
    # Within the verifier's clock leeway (10 s) an expiry may go either way: not a case worth asserting.
    assume(not (isinstance(exp, int) and now - 15 <= exp <= now))
    token = _sign_raw(claims)
    valid = (
        isinstance(claims.get("sub"), str)
        and claims["sub"].strip() != ""  # a blank subject names no one
        and claims.get("iss") == SETTINGS.effective_issuer
        and claims.get("aud") == SETTINGS.jwt_audience
        and isinstance(claims.get("exp"), int)
        and claims["exp"] > now - 5
    )
    try:
        asyncio.run(_verifier().verify(token))
        accepted = True
    except Unauthorized:
        accepted = False
    assert accepted is valid


def _sign_raw(claims: dict[str, Any]) -> str:
    """A JWS made by hand, so claims of any JSON type can be signed (PyJWT refuses to encode some)."""
    private = serialization.load_pem_private_key(KEY.private_key.encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    header = {"alg": "EdDSA", "kid": KEY.kid, "typ": "JWT"}
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = base64.urlsafe_b64encode(private.sign(signing_input.encode())).decode().rstrip("=")
    return f"{signing_input}.{signature}"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _decoded(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]


def test_the_signer_puts_issuer_audience_expiry_and_key_id_in_every_token() -> None:
    token = SIGNER.access_token(KEY, "ann", NOW, session_id="s", token_id="t")
    header = jwt.get_unverified_header(token)
    claims = json.loads(_decoded(token)[1])
    assert header["alg"] == "EdDSA" and header["kid"] == KEY.kid
    assert claims["iss"] == "https://id.test" and claims["aud"] == "gatherly" and claims["sub"] == "ann"
    assert claims["exp"] - claims["iat"] == SETTINGS.access_token_ttl_seconds == 15 * 60
