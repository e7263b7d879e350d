"""The users service's rules, without a database: emails, password policy, lockout, rate limits, tokens, profiles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gatherly.contracts.users import GeoPoint, ImageVariants
from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.settings import Settings
from gatherly.users.crypto import common_passwords, new_signing_key, retirable, signing_key_for
from gatherly.users.domain import (
    Avatar,
    Email,
    LoginThrottle,
    Profile,
    RateBucket,
    RateLimited,
    RefreshToken,
    RefreshVerdict,
    UserId,
    check_password_policy,
    clean_bio,
    clean_display_name,
    clean_image_id,
    clean_location,
    clean_topics,
    is_deletion_id,
    judge_refresh,
    lockout_for,
    normalize_email,
    successor_token,
    take_rate_token,
)
from gatherly.users.emails import retry_delay

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
COMMON = common_passwords()

# --- email ----------------------------------------------------------------------------------------------------


def test_an_email_address_is_stored_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Ann.Smith@Example.ORG ") == "ann.smith@example.org"


@pytest.mark.parametrize("raw", ["", "ann", "ann@", "@example.org", "ann@example", "a b@example.org", "a@b@c.org"])
def test_something_that_is_not_an_email_address_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_email(raw)


# --- password policy ------------------------------------------------------------------------------------------


def test_the_shipped_list_holds_thousands_of_common_passwords() -> None:
    assert len(COMMON) > 5000
    assert {"password", "123456", "qwerty123456", "password2024", "iloveyou123"} <= COMMON


@pytest.mark.parametrize("password", ["password123", "Qwertyuiop", "PASSWORD2020", "1234567890"])
def test_a_common_password_is_refused_whatever_its_case(password: str) -> None:
    with pytest.raises(InvalidInput, match="too common"):
        check_password_policy(password, COMMON)


def test_a_password_needs_ten_characters() -> None:
    with pytest.raises(InvalidInput, match="at least 10"):
        check_password_policy("short-pw!", COMMON)


def test_a_password_may_have_at_most_128_characters() -> None:
    check_password_policy("x" * 127 + "y", COMMON)
    with pytest.raises(InvalidInput, match="at most 128"):
        check_password_policy("x" * 129, COMMON)


@pytest.mark.parametrize("password", [" " * 10, " " * 128, "\u3000" * 12, "\t \n" * 4])
def test_a_password_of_only_spaces_is_refused(password: str) -> None:
    with pytest.raises(InvalidInput, match="only spaces"):
        check_password_policy(password, COMMON)


def test_a_passphrase_needs_no_digits_or_symbols() -> None:
    check_password_policy("correct horse battery staple", COMMON)


# --- lockout --------------------------------------------------------------------------------------------------


def test_four_failures_do_not_lock() -> None:
    throttle = LoginThrottle()
    for _ in range(4):
        throttle = throttle.after_failure(NOON)
    assert throttle.retry_after(NOON) is None


def test_the_fifth_failure_locks_for_one_second_then_doubling_up_to_fifteen_minutes() -> None:
    assert [lockout_for(n) for n in range(1, 5)] == [None] * 4
    assert [lockout_for(n) for n in range(5, 10)] == [timedelta(seconds=s) for s in (1, 2, 4, 8, 16)]
    assert lockout_for(14) == timedelta(seconds=512)
    assert lockout_for(15) == timedelta(minutes=15)
    assert lockout_for(10_000) == timedelta(minutes=15)


def test_a_lock_ends_when_its_time_is_up() -> None:
    throttle = LoginThrottle(failures=6, locked_until=NOON + timedelta(seconds=2))
    assert throttle.retry_after(NOON) == 2
    assert throttle.retry_after(NOON + timedelta(milliseconds=1500)) == 1
    assert throttle.retry_after(NOON + timedelta(seconds=2)) is None


# --- rate limits ----------------------------------------------------------------------------------------------


def test_a_client_gets_its_limit_per_minute_then_waits() -> None:
    bucket = None
    for _ in range(60):
        bucket = take_rate_token(bucket, 60, NOON)
    with pytest.raises(RateLimited) as refused:
        take_rate_token(bucket, 60, NOON)
    assert refused.value.retry_after == 1
    assert take_rate_token(bucket, 60, NOON + timedelta(seconds=1)).tokens == 0.0  # one more token a second


def test_a_new_client_starts_with_a_full_bucket_and_an_idle_one_refills_to_full_only() -> None:
    assert take_rate_token(None, 10, NOON) == RateBucket(9.0, NOON)
    emptied = RateBucket(0.0, NOON)
    assert take_rate_token(emptied, 10, NOON + timedelta(hours=5)) == RateBucket(9.0, NOON + timedelta(hours=5))


def test_a_clock_that_goes_back_adds_no_tokens() -> None:
    with pytest.raises(RateLimited):
        take_rate_token(RateBucket(0.5, NOON), 10, NOON - timedelta(minutes=5))


def test_the_default_limits_are_generous_and_hashing_is_production_strength() -> None:
    settings = Settings()
    assert (settings.signup_limit_per_minute, settings.login_limit_per_minute) == (30, 60)
    assert (settings.password_time_cost, settings.password_memory_kib, settings.password_parallelism) == (3, 65536, 4)


# --- refresh tokens ------------------------------------------------------------------------------------------


def _refresh(**changes: object) -> RefreshToken:
    values: dict[str, object] = {
        "digest": "d",
        "family_id": "f",
        "user_id": UserId("u"),
        "expires_at": NOON + timedelta(days=30),
    }
    return RefreshToken(**{**values, **changes})  # type: ignore[arg-type]


GRACE = timedelta(seconds=10)


def test_a_fresh_refresh_token_rotates() -> None:
    assert judge_refresh(_refresh(), NOON, GRACE) is RefreshVerdict.ROTATE


def test_a_spent_refresh_token_is_a_reuse() -> None:
    assert judge_refresh(_refresh(used_at=NOON), NOON, timedelta(0)) is RefreshVerdict.REUSED


def test_a_refresh_token_spent_within_the_grace_window_repeats_its_rotation_and_after_it_is_a_reuse() -> None:
    rotated = _refresh(used_at=NOON, successor_nonce="n")
    assert judge_refresh(rotated, NOON + GRACE - timedelta(milliseconds=1), GRACE) is RefreshVerdict.REPEAT
    assert judge_refresh(rotated, NOON + GRACE, GRACE) is RefreshVerdict.REUSED
    # Spent before successors were remembered (no nonce): nothing to repeat.
    assert judge_refresh(_refresh(used_at=NOON), NOON, GRACE) is RefreshVerdict.REUSED


def test_a_successor_needs_both_the_token_and_the_nonce() -> None:
    assert successor_token("token", "nonce") == successor_token("token", "nonce")
    assert successor_token("token", "nonce") != successor_token("token", "other nonce")
    assert successor_token("token", "nonce") != successor_token("other token", "nonce")


@pytest.mark.parametrize(
    "token",
    [None, _refresh(revoked_at=NOON), _refresh(expires_at=NOON)],
    ids=["unknown", "revoked", "expired"],
)
def test_unknown_revoked_and_expired_refresh_tokens_are_invalid(token: RefreshToken | None) -> None:
    assert judge_refresh(token, NOON, GRACE) is RefreshVerdict.INVALID


# --- signing keys ---------------------------------------------------------------------------------------------


def test_a_rotated_in_key_signs_only_once_active_and_the_old_one_retires_after_a_token_lifetime() -> None:
    old = new_signing_key(NOON)
    new = new_signing_key(NOON + timedelta(hours=1), activates_at=NOON + timedelta(hours=1, seconds=30))
    keys = [old, new]
    assert signing_key_for(keys, NOON + timedelta(hours=1)).kid == old.kid
    assert signing_key_for(keys, NOON + timedelta(hours=1, seconds=30)).kid == new.kid
    lifetime = timedelta(minutes=16)
    assert retirable(keys, NOON + timedelta(hours=1, minutes=10), lifetime) == []
    assert retirable(keys, NOON + timedelta(hours=1, minutes=17), lifetime) == [old.kid]


def test_the_published_key_names_its_algorithm_and_use_but_holds_no_private_part() -> None:
    key = new_signing_key(NOON)
    assert key.public_jwk["kty"] == "OKP" and key.public_jwk["alg"] == "EdDSA" and key.public_jwk["use"] == "sig"
    assert "d" not in key.public_jwk


# --- mail retries ---------------------------------------------------------------------------------------------


def test_mail_retries_back_off_doubling_up_to_a_cap() -> None:
    delays = [retry_delay(n, initial=5, longest=900).total_seconds() for n in range(10)]
    assert delays == [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]
    assert retry_delay(10_000, initial=5, longest=900) == timedelta(seconds=900)


# --- profiles -------------------------------------------------------------------------------------------------


def test_a_display_name_is_trimmed_and_stripped_of_control_characters() -> None:
    assert clean_display_name("  Ann\u200b  Smith\x07 ") == "Ann Smith"
    with pytest.raises(InvalidInput):
        clean_display_name(" \t ")
    with pytest.raises(InvalidInput):
        clean_display_name("a" * 81)


def test_a_display_name_keeps_joiners_that_emoji_and_persian_need() -> None:
    family = "\U0001f469\u200d\U0001f467"  # woman ZWJ girl: one emoji
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "mi-khaham", ZWNJ between the parts
    assert clean_display_name(family) == family
    assert clean_display_name(persian) == persian


@pytest.mark.parametrize("name", ["Ann\u202eSmith", "\u2066Ann", "\u200d\u200c", "\u3164", "\u200b \u2800"])
def test_a_display_name_with_bidi_overrides_or_nothing_visible_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        clean_display_name(name)
    assert refused.value.field == "display_name"


def test_a_bio_keeps_its_lines_but_is_bounded() -> None:
    assert clean_bio("Hello\r\nworld <b>hi</b>") == "Hello\nworld <b>hi</b>"
    with pytest.raises(InvalidInput):
        clean_bio("x" * 2001)


def test_topics_are_lower_cased_deduplicated_and_bounded() -> None:
    assert clean_topics(["Hiking", " hiking", "Board  Games", ""]) == ["hiking", "board games"]
    with pytest.raises(InvalidInput):
        clean_topics([f"t{n}" for n in range(21)])


def test_a_location_must_be_on_earth() -> None:
    assert clean_location(GeoPoint(lat=52.5, lng=13.4)) == GeoPoint(lat=52.5, lng=13.4)
    with pytest.raises(InvalidInput):
        clean_location(GeoPoint(lat=91, lng=0))


def test_an_avatar_image_id_is_a_uuid() -> None:
    with pytest.raises(InvalidInput):
        clean_image_id("../../etc/passwd")


VARIANTS = ImageVariants(thumb="t", medium="m", large="l")


def _profile(avatar_image_id: str | None) -> Profile:
    return Profile(UserId("ann"), Email("ann@example.org"), "Ann", NOON, NOON, avatar_image_id=avatar_image_id)


def test_an_avatar_shows_once_ready_and_owned_by_the_person() -> None:
    assert _profile("img").avatar(Avatar("img", "ann", VARIANTS)) == VARIANTS
    assert _profile("img").avatar(None) is None  # not ready yet
    assert _profile("img").avatar(Avatar("img", "bob", VARIANTS)) is None  # someone else's image
    assert _profile(None).avatar(Avatar("img", "ann", VARIANTS)) is None


def test_every_domain_error_has_an_http_status() -> None:
    """A domain error missing from api.STATUS_OF would leave as a bare 400."""
    from gatherly.kernel.errors import DomainError
    from gatherly.users import api, domain

    errors = {
        value
        for value in vars(domain).values()
        if isinstance(value, type) and issubclass(value, DomainError) and value.__module__ == domain.__name__
    }
    assert errors and errors == set(api.STATUS_OF)


def test_only_a_canonical_uuid_can_name_an_account_deletion() -> None:
    made = str(uuid.uuid4())
    assert is_deletion_id(made)
    for hostile in (made.upper(), made + "\x00", "", "\x00", "9" * 100_000, "{" + made + "}", made.replace("-", "")):
        assert not is_deletion_id(hostile), hostile
