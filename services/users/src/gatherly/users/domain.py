"""What the users service's entities are and the rules they obey: no I/O, no framework."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import unicodedata
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NewType

from gatherly.contracts.users import EXPORT_PARTS, GeoPoint, ImageVariants, UserProfileUpdated
from gatherly.kernel.errors import DomainError, InvalidInput, TooManyRequests
from gatherly.kernel.read_models import ReadyImage
from gatherly.kernel.text import check_name, text_problem

UserId = NewType("UserId", str)
Email = NewType("Email", str)

# --- errors (api.py gives each its HTTP status) -----------------------------------------------------------------------
# The two 429s are the kernel's TooManyRequests: they carry how long to wait (Retry-After).


class BadCredentials(DomainError):
    """One answer for an unknown email and a wrong password, so a login reveals nobody's account."""

    title = "Invalid credentials"

    def __init__(self) -> None:
        super().__init__("The email or password is not right.")


class AccountNotConfirmed(DomainError):
    title = "Email not confirmed"

    def __init__(self) -> None:
        super().__init__("Confirm your email address first: follow the link in the email we sent.")


class AccountLocked(TooManyRequests):
    title = "Too many failed logins"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; try again in {retry_after} s.", retry_after=retry_after)


class RateLimited(TooManyRequests):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests from your address; try again in {retry_after} s.", retry_after=retry_after)


class AccountLockedByAdministrator(DomainError):
    """Said only to whoever gave the right password (like AccountNotConfirmed), so it reveals nothing to others."""

    title = "Account locked"

    def __init__(self) -> None:
        super().__init__("An administrator has locked this account. Contact support to have it unlocked.")


class NoAccountWithEmail(DomainError):
    """An administrator named an address no account has (or whose account is being deleted)."""

    title = "Not found"

    def __init__(self, email: str) -> None:
        super().__init__(f"No account has the email address {email}.")


class InvalidRefreshToken(DomainError):
    title = "Invalid refresh token"

    def __init__(self) -> None:
        super().__init__("The refresh token is not valid; log in again.")


class InvalidLink(DomainError):
    """A confirmation or reset token that is unknown, used or expired (the link, not the form, is wrong)."""

    title = "Invalid or expired link"

    def __init__(self) -> None:
        super().__init__("This link is not valid any more. Ask for a new one.")


class TooManyExports(TooManyRequests):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"You may ask for {limit} data exports in 24 hours; try again in {retry_after} s.", retry_after=retry_after
        )


class NoExport(DomainError):
    title = "Not found"

    def __init__(self) -> None:
        super().__init__("You have no export with this id.")


class NoDeletion(DomainError):
    title = "Not found"

    def __init__(self) -> None:
        super().__init__("This account has not been asked to be deleted.")


class UserNotFound(DomainError):
    title = "Not found"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"No user {user_id}.")


class AccountGone(DomainError):
    """A valid access token whose account was deleted (or is being deleted): the token, not a resource, is wrong."""

    title = "Account closed"

    def __init__(self) -> None:
        super().__init__("The account this token belongs to no longer exists; log in again.")


class WrongPassword(DomainError):
    title = "Wrong password"

    def __init__(self, field: str) -> None:
        detail = "The current password is not right."
        super().__init__(detail, errors=[{"field": field, "message": detail}])


class EmailTaken(DomainError):
    title = "Email address taken"

    def __init__(self) -> None:
        detail = "Another account uses this email address."
        super().__init__(detail, errors=[{"field": "new_email", "message": detail}])


# --- email ----------------------------------------------------------------------------------------------------

# Deliberately loose (one @, a dot in the domain, no spaces): the confirmation email is the real check.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 254


def normalize_email(raw: str) -> Email:
    """The form an address is stored and compared in: trimmed and lower-cased (providers treat the local
    part case-insensitively in practice, and two accounts differing only by case would confuse people)."""
    email = unicodedata.normalize("NFC", raw.strip()).lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise InvalidInput("This is not an email address.", field="email")
    return Email(email)


def email_key(email: Email) -> str:
    """What login throttles are keyed by: a digest, so addresses of people who have no account are not stored."""
    return hashlib.sha256(email.encode()).hexdigest()


# --- passwords --------------------------------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 128


def normalize_password(password: str) -> str:
    """NFKC, so the same passphrase typed on two keyboards (composed vs decomposed accents) is the same secret."""
    return unicodedata.normalize("NFKC", password)


def check_password_policy(password: str, common_passwords: Collection[str], *, field: str = "password") -> None:
    """Length 10 to 128 and not a well-known password; no composition rules (NIST SP 800-63B)."""
    length = len(normalize_password(password))
    if not password.strip():
        raise InvalidInput("A password cannot be only spaces.", field=field)
    if length < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", field=field)
    if length > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"A password may have at most {MAX_PASSWORD_LENGTH} characters.", field=field)
    if normalize_password(password).lower() in common_passwords:
        raise InvalidInput("This password is too common; choose another one.", field=field)


# --- opaque tokens ----------------------------------------------------------------------------------------------

OPAQUE_TOKEN_BYTES = 32


def new_opaque_token() -> str:
    """A random secret for links and refresh tokens (256 bits, URL-safe)."""
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def token_digest(token: str) -> str:
    """Tokens are stored as SHA-256: a leaked table yields nothing usable. (No salt or slow hash needed:
    the token is 256 random bits, not something a person chose.)"""
    return hashlib.sha256(token.encode()).hexdigest()


def successor_token(token: str, nonce: str) -> str:
    """The refresh token that replaces `token` at its rotation: derived from it and a nonce kept in its row, so a
    repeat of the rotation within the grace window can hand out the same one without the row ever holding a usable
    secret. Needs both halves: a copy of the old token alone, or a copy of the table alone, yields nothing."""
    digest = hmac.new(token.encode(), nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def access_token_id(refresh_token: str) -> str:
    """The `jti` of the access token issued with a refresh token: unique as the refresh token is, and the same
    each time that pair is made (a repeated rotation returns the very same pair)."""
    return hashlib.sha256(b"jti:" + refresh_token.encode()).hexdigest()[:32]


class TokenPurpose(StrEnum):
    CONFIRM_EMAIL = "confirm_email"
    RESET_PASSWORD = "reset_password"
    CHANGE_EMAIL = "change_email"


TOKEN_LIFETIMES: dict[TokenPurpose, timedelta] = {
    TokenPurpose.CONFIRM_EMAIL: timedelta(hours=24),
    TokenPurpose.RESET_PASSWORD: timedelta(hours=1),
    TokenPurpose.CHANGE_EMAIL: timedelta(hours=24),
}


@dataclass(frozen=True)
class OneTimeToken:
    """An emailed link's secret, as stored: single use, expiring. A confirmation token may carry the password
    hash and name chosen at that sign-up, so whoever owns the mailbox activates the credentials of the
    sign-up they confirm (someone else signing up with your address cannot pick your password)."""

    digest: str
    purpose: TokenPurpose
    user_id: UserId
    expires_at: datetime
    used_at: datetime | None = None
    password_hash: str | None = None
    display_name: str | None = None
    new_email: Email | None = None  # a change-email token: the address it confirms

    def is_usable(self, purpose: TokenPurpose, now: datetime) -> bool:
        return self.purpose is purpose and self.used_at is None and now < self.expires_at


@dataclass(frozen=True)
class RefreshToken:
    """One link of a rotation chain ("family"): each use retires it and issues the next."""

    digest: str
    family_id: str
    user_id: UserId
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None
    successor_nonce: str | None = None  # set at rotation: with the token, it gives the successor (successor_token)


# --- refresh tokens: rotation and reuse detection ----------------------------------------------------------------


class RefreshVerdict(StrEnum):
    """What presenting a refresh token means (the rule; crypto.py only makes and signs tokens)."""

    ROTATE = "rotate"
    REPEAT = "repeat"  # rotated a moment ago (another tab refreshed at once): the same new pair again
    REUSED = "reused"  # a retired token came back after the grace window: someone holds a copy; the family dies
    INVALID = "invalid"


def judge_refresh(token: RefreshToken | None, now: datetime, grace: timedelta) -> RefreshVerdict:
    if token is None or token.revoked_at is not None or now >= token.expires_at:
        return RefreshVerdict.INVALID
    if token.used_at is not None:
        if token.successor_nonce is not None and now < token.used_at + grace:
            return RefreshVerdict.REPEAT
        return RefreshVerdict.REUSED
    return RefreshVerdict.ROTATE


# --- lockout ----------------------------------------------------------------------------------------------------

FAILURES_BEFORE_LOCKOUT = 5
FIRST_LOCKOUT = timedelta(seconds=1)
LONGEST_LOCKOUT = timedelta(minutes=15)


@dataclass(frozen=True)
class LoginThrottle:
    """Consecutive failed logins for one email address (account or not, so lockout reveals nothing) and
    until when it is locked. Like Cognito: from the 5th failure on, locked for 1 s, doubling per further
    failure up to 15 min; attempts while locked are refused without checking the password."""

    failures: int = 0
    locked_until: datetime | None = None

    def retry_after(self, now: datetime) -> int | None:
        """Whole seconds to wait while locked, else None."""
        if self.locked_until is None or now >= self.locked_until:
            return None
        return max(1, math.ceil((self.locked_until - now).total_seconds()))

    def after_failure(self, now: datetime) -> LoginThrottle:
        failures = self.failures + 1
        lockout = lockout_for(failures)
        return replace(self, failures=failures, locked_until=now + lockout if lockout else None)


def lockout_for(failures: int) -> timedelta | None:
    if failures < FAILURES_BEFORE_LOCKOUT:
        return None
    doublings = failures - FAILURES_BEFORE_LOCKOUT
    # Cap the exponent before computing: 2**failures of an ancient counter must not overflow a timedelta.
    if doublings >= math.ceil(math.log2(LONGEST_LOCKOUT / FIRST_LOCKOUT)):
        return LONGEST_LOCKOUT
    return min(FIRST_LOCKOUT * 2**doublings, LONGEST_LOCKOUT)


# --- rate limits ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateBucket:
    """A token bucket of one (action, client address): `tokens` as of `updated`."""

    tokens: float
    updated: datetime


def take_rate_token(bucket: RateBucket | None, limit_per_minute: int, now: datetime) -> RateBucket:
    """The bucket after one request: `limit_per_minute` requests per minute, refilled continuously, so a burst of
    `limit` is allowed and then one every 60/limit seconds; a new client starts full. Raises RateLimited with the
    seconds until a token is there. These limits slow scripts down; they are not an accounting."""
    per_second = limit_per_minute / 60.0
    if bucket is None:
        tokens = float(limit_per_minute)
    else:
        elapsed = max(0.0, (now - bucket.updated).total_seconds())
        tokens = min(float(limit_per_minute), bucket.tokens + elapsed * per_second)
    if tokens < 1.0:
        raise RateLimited(max(1, math.ceil((1.0 - tokens) / per_second)))
    return RateBucket(tokens - 1.0, now)


# --- profiles ---------------------------------------------------------------------------------------------------

MAX_DISPLAY_NAME = 80
MAX_BIO = 2000
MAX_CITY = 100
MAX_TOPICS = 20
MAX_TOPIC = 40

# Control characters (except newline and tab in the bio) and zero-width spaces have no business in text shown to
# others. The joiners ZWJ/ZWNJ (U+200C/U+200D) are kept: emoji sequences and Persian need them. Bidi overrides are
# refused in names (kernel text policy) and dropped from the other fields.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2066-\u2069]")


def clean_display_name(raw: str) -> str:
    check_name(raw, "display_name")
    name = " ".join(_CONTROL.sub("", raw).split())
    if not name:
        raise InvalidInput("A display name cannot be empty.", field="display_name")
    if len(name) > MAX_DISPLAY_NAME:
        raise InvalidInput(f"A display name has at most {MAX_DISPLAY_NAME} characters.", field="display_name")
    return name


def clean_bio(raw: str) -> str:
    """Plain text: kept as typed (clients escape it), minus control characters, at most MAX_BIO characters."""
    bio = _CONTROL.sub("", raw.replace("\r\n", "\n")).strip()
    if len(bio) > MAX_BIO:
        raise InvalidInput(f"A bio has at most {MAX_BIO} characters.", field="bio")
    return bio


MAX_LOCK_REASON = 500


def clean_lock_reason(raw: str) -> str:
    """Why an administrator locks an account: required, one line of visible text, kept in the `user.locked` event."""
    problem = text_problem(raw)
    if problem:
        raise InvalidInput(f"The reason {problem}.", field="reason")
    reason = " ".join(_CONTROL.sub(" ", raw).split())
    if not reason:
        raise InvalidInput("Give a reason for the lock.", field="reason")
    if len(reason) > MAX_LOCK_REASON:
        raise InvalidInput(f"A reason has at most {MAX_LOCK_REASON} characters.", field="reason")
    return check_name(reason, "reason")


def clean_city(raw: str | None) -> str | None:
    if raw is None:
        return None
    city = " ".join(_CONTROL.sub("", raw).split())
    if len(city) > MAX_CITY:
        raise InvalidInput(f"A city has at most {MAX_CITY} characters.", field="city")
    return city or None


def clean_topics(raw: Iterable[str]) -> list[str]:
    """Lower-case, trimmed, de-duplicated in the order given."""
    topics: list[str] = []
    for item in raw:
        topic = " ".join(_CONTROL.sub("", item).split()).lower()
        if not topic or topic in topics:
            continue
        if len(topic) > MAX_TOPIC:
            raise InvalidInput(f"A topic has at most {MAX_TOPIC} characters.", field="topics")
        topics.append(topic)
    if len(topics) > MAX_TOPICS:
        raise InvalidInput(f"At most {MAX_TOPICS} topics.", field="topics")
    return topics


def clean_location(point: GeoPoint | None) -> GeoPoint | None:
    if point is None:
        return None
    if not (-90.0 <= point.lat <= 90.0 and -180.0 <= point.lng <= 180.0) or not all(
        math.isfinite(v) for v in (point.lat, point.lng)
    ):
        raise InvalidInput("A location needs -90 ≤ lat ≤ 90 and -180 ≤ lng ≤ 180.", field="location")
    return point


def clean_image_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput("An image id is a UUID.", field="avatar_image_id")


# A ready image as the images service reported it: the users service's read model of avatars.
Avatar = ReadyImage


@dataclass(frozen=True)
class Profile:
    user_id: UserId
    email: Email | None
    display_name: str
    created_at: datetime
    updated_at: datetime
    bio: str = ""
    city: str | None = None
    location: GeoPoint | None = None
    topics: list[str] = field(default_factory=list)
    avatar_image_id: str | None = None
    confirmed: bool = False
    closed: bool = False  # its deletion was asked for

    def avatar(self, image: Avatar | None) -> ImageVariants | None:
        """The chosen image is shown only once it is ready AND was uploaded by this person."""
        if image is None or self.avatar_image_id != image.image_id or image.owner_id != self.user_id:
            return None
        return image.variants

    def changed(self, updated_at: datetime, **changes: object) -> Profile:
        return replace(self, updated_at=updated_at, **changes)  # type: ignore[arg-type]

    def published(self, image: Avatar | None) -> UserProfileUpdated:
        return UserProfileUpdated(
            user_id=self.user_id,
            email=self.email or "",
            display_name=self.display_name,
            bio=self.bio,
            city=self.city,
            location=self.location,
            topics=list(self.topics),
            avatar=self.avatar(image),
            updated_at=self.updated_at,
        )


# --- account deletion -------------------------------------------------------------------------------------------

ACCOUNT_DELETION = "account_deletion"  # the saga's `kind` in the kernel's sagas table
# The services that hold something of a person and answer `user.deleted` with `user_deletion.step_done`. The users
# service's own erasure counts as a reply from "users" (it happens through the log too: `erase_account`).
DELETION_PARTICIPANTS = ("groups", "events", "notifications", "images")
OWN_ERASURE = "users"


def is_deletion_id(value: str) -> bool:
    """Whether `value` can name an account deletion (this service makes them as canonical UUIDs); anything else in
    a reply (a NUL, a huge string) is not looked up, as PostgreSQL refuses some such values outright."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class DeletionStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class AccountDeletion:
    """The account-deletion saga of one account. Asked for: the sessions end and `user.deleted` goes out; each
    service in `awaits` erases what it holds and replies; this service erases the account when `user.deleted` comes
    back through the log. `completed` once every one of them (and the erasure here) has answered; `failed` when
    some have not by the deadline. A deletion started before services replied awaits nobody but the erasure."""

    id: str
    user_id: UserId
    status: DeletionStatus
    reason: str | None
    deadline_at: datetime
    awaits: tuple[str, ...] = ()
    answered: tuple[str, ...] = ()  # who has answered (OWN_ERASURE included), in the order they did

    def is_overdue(self, now: datetime) -> bool:
        return self.status is DeletionStatus.PENDING and now >= self.deadline_at

    @property
    def missing(self) -> tuple[str, ...]:
        """Who has still to answer, the erasure here last."""
        expected = (*self.awaits, OWN_ERASURE)
        return tuple(who for who in expected if who not in self.answered)

    @property
    def is_done(self) -> bool:
        return not self.missing

    @property
    def overdue_reason(self) -> str:
        return (
            f"Not finished by {self.deadline_at.isoformat(timespec='seconds')}: no answer from "
            f"{', '.join(self.missing)}. Ask again, or contact support."
        )


# --- data export ------------------------------------------------------------------------------------------------

DATA_EXPORT = "user_export"  # the saga's `kind` in the kernel's sagas table
ARCHIVE_MAKER = "images"  # the service that collects the parts and writes the archive


class ExportStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class DataExport:
    """The data-export saga of one request: pending until the images service announces the archive (every part
    in), failed when a part failed or the deadline passed first. `parts` are the services whose part arrived."""

    id: str
    user_id: UserId
    status: ExportStatus
    reason: str | None
    deadline_at: datetime
    requested_at: datetime
    parts: tuple[str, ...] = ()
    download_url: str | None = None
    expires_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        """Pending and within its deadline: asked again, the person gets this one rather than a second export."""
        return self.status is ExportStatus.PENDING and now < self.deadline_at

    def with_part(self, service: str) -> DataExport:
        if service not in EXPORT_PARTS or service in self.parts:
            return self
        return replace(self, parts=(*self.parts, service))

    def silent(self) -> list[str]:
        """The services that have not answered: parts not in, and the archive's maker while it is not ready."""
        return [s for s in EXPORT_PARTS if s not in self.parts] + ([ARCHIVE_MAKER] if self.download_url is None else [])

    def timeout_reason(self) -> str:
        return f"No answer in time from: {', '.join(self.silent())}. Ask again, or contact support."

    def link(self, now: datetime) -> str | None:
        """The download link while it works."""
        if self.download_url is None or self.expires_at is None or now >= self.expires_at:
            return None
        return self.download_url


EXPORT_LIMIT_WINDOW = timedelta(days=1)
ACCOUNT_DELETED = "The account was deleted."  # the reason of an export the account's deletion ended


def export_to_give(recent: Sequence[DataExport], now: datetime, *, per_day: int) -> DataExport | None:
    """What a new export request gets, from the person's exports requested in the last EXPORT_LIMIT_WINDOW: the one
    still being made, if any (one at a time), else None (start one) while they have made fewer than `per_day`.
    Raises TooManyExports, saying when the oldest of them leaves the window."""
    for export in recent:
        if export.is_live(now):
            return export
    if len(recent) < per_day:
        return None
    oldest = min(export.requested_at for export in recent)
    raise TooManyExports(per_day, max(1, math.ceil((oldest + EXPORT_LIMIT_WINDOW - now).total_seconds())))
