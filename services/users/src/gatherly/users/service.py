"""Use cases of the users service: one function per thing a person does, state and outbox committed together."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from gatherly.contracts.images import ImageDeleted, ImageReady
from gatherly.contracts.users import (
    ImageVariants,
    UserConfirmed,
    UserDeleted,
    UserDeletionStepDone,
    UserExportArchiveReady,
    UserExportPartFailed,
    UserExportPartReady,
    UserExportRequested,
    UserLocked,
    UserRegistered,
    UserUnlocked,
)
from gatherly.kernel.auth import Principal
from gatherly.kernel.db import Database
from gatherly.kernel.errors import DomainError, InvalidInput, NotFound
from gatherly.kernel.exports import export_part
from gatherly.kernel.revocation import RevocationChange, wait_before_unlocking
from gatherly.kernel.settings import Settings
from gatherly.kernel.text import text_problem
from gatherly.users.crypto import (
    ALGORITHM,
    Passwords,
    Signer,
    common_passwords,
    jwks,
    new_signing_key,
    retirable,
    signing_key_for,
)
from gatherly.users.domain import (
    ACCOUNT_DELETED,
    DELETION_PARTICIPANTS,
    EXPORT_LIMIT_WINDOW,
    OWN_ERASURE,
    TOKEN_LIFETIMES,
    AccountDeletion,
    AccountGone,
    AccountLocked,
    AccountLockedByAdministrator,
    AccountNotConfirmed,
    Avatar,
    BadCredentials,
    DataExport,
    DeletionStatus,
    Email,
    EmailTaken,
    ExportStatus,
    InvalidLink,
    InvalidRefreshToken,
    NoAccountWithEmail,
    NoDeletion,
    NoExport,
    OneTimeToken,
    Profile,
    RefreshToken,
    RefreshVerdict,
    TokenPurpose,
    UserId,
    UserNotFound,
    WrongPassword,
    access_token_id,
    check_password_policy,
    clean_bio,
    clean_city,
    clean_display_name,
    clean_image_id,
    clean_location,
    clean_lock_reason,
    clean_topics,
    email_key,
    export_to_give,
    is_deletion_id,
    judge_refresh,
    new_opaque_token,
    normalize_email,
    successor_token,
    take_rate_token,
    token_digest,
)
from gatherly.users.emails import EmailTemplates, RenderedMail, templates_at
from gatherly.users.schemas import AuthorizationServerMetadata, OpenIdConfiguration
from gatherly.users.store import Credentials, StoredKey, UsersUnitOfWork, is_unique_violation, reading

log = structlog.get_logger(__name__)

AVATAR_PURPOSE = "avatar"


@dataclass
class Identity:
    """What the identity use cases need besides a unit of work; built once when the service starts."""

    settings: Settings
    passwords: Passwords
    signer: Signer
    templates: EmailTemplates
    rate_limits: dict[str, int]  # requests per minute per client address, by action (0: no limit)
    common_passwords: frozenset[str]

    @classmethod
    def build(cls, settings: Settings) -> Identity:
        return cls(
            settings=settings,
            passwords=Passwords(settings),
            signer=Signer(settings),
            templates=templates_at(settings.effective_public_url),
            rate_limits={
                "signup": settings.signup_limit_per_minute,
                "login": settings.login_limit_per_minute,
                "password_reset": settings.password_reset_limit_per_minute,
            },
            common_passwords=common_passwords(),
        )

    @property
    def external(self) -> bool:
        """An outside OIDC provider issues the tokens (people arrive with its `sub`, not through sign-up)."""
        return bool(self.settings.jwks_url)

    @property
    def refresh_lifetime(self) -> timedelta:
        return timedelta(days=self.settings.refresh_token_ttl_days)

    @property
    def refresh_grace(self) -> timedelta:
        return timedelta(seconds=self.settings.refresh_grace_seconds)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


# --- sign-up and confirmation -----------------------------------------------------------------------------------


async def _spend_rate_token(uow: UsersUnitOfWork, identity: Identity, action: str, client: str) -> None:
    """One request of `client` for `action`, counted in the database so every process of the service shares the
    limit; a short transaction of its own, before any slow work (a password hash) and any other lock."""
    limit = identity.rate_limits[action]
    if limit <= 0:
        return
    client = client[:100]
    async with uow:
        now = uow.clock.now()
        bucket = await uow.rate_buckets.locked(action, client, now, full=float(limit))
        await uow.rate_buckets.save(action, client, take_rate_token(bucket, limit, now))


async def sign_up(
    uow: UsersUnitOfWork, identity: Identity, *, email: str, password: str, display_name: str, client: str
) -> None:
    """Answer the same whether or not the address has an account: a new one gets a confirmation link, an
    unconfirmed one a fresh link (for the credentials of this sign-up), a confirmed one an "already
    registered" email. The password is hashed in every case so the timing says nothing either."""
    await _spend_rate_token(uow, identity, "signup", client)
    address = normalize_email(email)
    name = clean_display_name(display_name)
    check_password_policy(password, identity.common_passwords)
    password_hash = await identity.passwords.hash(password)
    for attempt in (1, 2):
        try:
            await _register(uow, identity, address, name, password_hash)
            return
        except IntegrityError as error:
            # Two sign-ups with one address raced (PostgreSQL): the second now finds the first's account.
            if attempt == 2 or not is_unique_violation(error):
                raise


async def _register(uow: UsersUnitOfWork, identity: Identity, email: Email, name: str, password_hash: str) -> None:
    async with uow:
        now = uow.clock.now()
        existing = await uow.accounts.credentials_of(email)
        if existing is None:
            user_id = UserId(str(uuid.uuid4()))
            await uow.accounts.add(Profile(user_id, email, name, created_at=now, updated_at=now), password_hash)
            token = await _issue_one_time(uow, user_id, TokenPurpose.CONFIRM_EMAIL, now)
            mail = identity.templates.confirmation(name, token)
            uow.publish(UserRegistered(user_id=user_id, email=email, display_name=name, registered_at=now))
        elif existing.confirmed_at is None:
            token = await _issue_one_time(
                uow, existing.user_id, TokenPurpose.CONFIRM_EMAIL, now, password_hash=password_hash, display_name=name
            )
            mail = identity.templates.confirmation(name, token)
        else:
            profile = await _profile(uow, existing.user_id)
            mail = identity.templates.already_registered(profile.display_name)
        await _queue(uow, email, mail)


async def confirm_email(uow: UsersUnitOfWork, token: str) -> None:
    """Spend a confirmation link: the account can log in from now on, and other services learn of the person."""
    async with uow:
        now = uow.clock.now()
        stored = await _spend(uow, token, TokenPurpose.CONFIRM_EMAIL, now)
        credentials = await uow.accounts.credentials_by_id(stored.user_id)
        if credentials is None or credentials.confirmed_at is not None:
            raise InvalidLink()
        if stored.password_hash is not None:
            await uow.accounts.set_password(stored.user_id, stored.password_hash)
        profile = await _profile(uow, stored.user_id)
        if stored.display_name is not None and stored.display_name != profile.display_name:
            profile = profile.changed(now, display_name=stored.display_name)
            await uow.accounts.save_profile(profile)
        await _confirm(uow, profile, now)


async def _confirm(uow: UsersUnitOfWork, profile: Profile, now: datetime) -> None:
    await uow.accounts.confirm(profile.user_id, now)
    await uow.one_time_tokens.use_all(profile.user_id, TokenPurpose.CONFIRM_EMAIL, now)
    uow.publish(
        UserConfirmed(
            user_id=profile.user_id, email=profile.email or "", display_name=profile.display_name, confirmed_at=now
        ),
        # Read models elsewhere get the person as soon as they can log in, not only at their first edit.
        profile.published(await uow.avatars.get(profile.avatar_image_id)),
    )


# --- sessions ---------------------------------------------------------------------------------------------------


async def log_in(uow: UsersUnitOfWork, identity: Identity, *, email: str, password: str, client: str) -> TokenPair:
    """Check the password off the event loop and outside any transaction; record the outcome after.

    Failures are counted per email address whether or not it has an account, and an unknown address still
    costs a hash, so neither the answer, the lockout nor the timing tells who has an account."""
    await _spend_rate_token(uow, identity, "login", client)
    now = uow.clock.now()
    try:
        address: Email | None = normalize_email(email)
    except InvalidInput:
        address = None
    throttle_key = email_key(address or Email(email))
    async with reading(uow.db) as stores:
        wait = (await stores.throttles.get(throttle_key)).retry_after(now)
        credentials = await stores.accounts.credentials_of(address) if address else None
    if wait is not None:
        raise AccountLocked(wait)
    stored_hash = credentials.password_hash if credentials else None
    matches = await identity.passwords.verify(stored_hash, password)
    upgraded = None
    if matches and stored_hash is not None and identity.passwords.needs_rehash(stored_hash):
        upgraded = await identity.passwords.hash(password)

    outcome: DomainError
    async with uow:
        now = uow.clock.now()
        if not matches or credentials is None:
            # Re-read in the transaction: concurrent failures must all count.
            throttle = await uow.throttles.get(throttle_key)
            await uow.throttles.save(throttle_key, throttle.after_failure(now), now)
            outcome = BadCredentials()
        else:
            await uow.throttles.clear(throttle_key)
            if upgraded is not None:
                await uow.accounts.set_password(credentials.user_id, upgraded)
            if credentials.confirmed_at is None:
                outcome = AccountNotConfirmed()
            elif await _locked(uow, credentials.user_id):
                outcome = AccountLockedByAdministrator()
            else:
                return await _issue_tokens(uow, identity, credentials.user_id, now)
    # Raised after the commit: the failure count (or the reset and rehash) must be kept.
    raise outcome


async def refresh(uow: UsersUnitOfWork, identity: Identity, refresh_token: str) -> TokenPair:
    """Rotate: the presented token is spent and a new pair issued in the same family. Presented again within the
    grace window (two tabs refreshing at once), it gives the same new pair; later, it means two parties hold it
    and the whole family is revoked, so the thief's copy dies too."""
    digest = token_digest(refresh_token)
    grace = identity.refresh_grace
    async with uow:
        now = uow.clock.now()
        stored = await uow.refresh_tokens.get(digest)
        verdict = judge_refresh(stored, now, grace)
        if verdict is RefreshVerdict.ROTATE:
            nonce = new_opaque_token()
            if await uow.refresh_tokens.mark_used(digest, now, nonce):
                assert stored is not None  # ROTATE judges a stored token
                if await _can_log_in(uow, stored.user_id):
                    secret = successor_token(refresh_token, nonce)
                    return await _issue_tokens(uow, identity, stored.user_id, now, stored.family_id, secret)
                verdict = RefreshVerdict.INVALID
            else:
                # A concurrent request rotated it a moment ago (its commit is visible now): judge what it left.
                stored = await uow.refresh_tokens.get(digest)
                verdict = judge_refresh(stored, now, grace)
        if stored is not None and verdict is RefreshVerdict.REPEAT:
            pair = await _repeat_rotation(uow, identity, stored, refresh_token, now)
            if pair is not None:
                return pair
        if stored is not None and verdict is RefreshVerdict.REUSED:
            await uow.refresh_tokens.revoke_family(stored.family_id, now)
    raise InvalidRefreshToken()


async def _repeat_rotation(
    uow: UsersUnitOfWork, identity: Identity, stored: RefreshToken, refresh_token: str, now: datetime
) -> TokenPair | None:
    """The pair this token's rotation issued, made again; None when that successor was revoked meanwhile."""
    assert stored.used_at is not None and stored.successor_nonce is not None  # REPEAT judges a rotated token
    secret = successor_token(refresh_token, stored.successor_nonce)
    successor = await uow.refresh_tokens.get(token_digest(secret))
    if successor is None or successor.revoked_at is not None or not await _can_log_in(uow, stored.user_id):
        return None
    return await _pair(uow, identity, successor, secret, issued_at=stored.used_at, now=now)


async def _can_log_in(uow: UsersUnitOfWork, user_id: str) -> bool:
    credentials = await uow.accounts.credentials_by_id(user_id)
    return (
        credentials is not None
        and credentials.confirmed_at is not None
        and credentials.closed_at is None
        and not await _locked(uow, user_id)
    )


async def _locked(uow: UsersUnitOfWork, user_id: str) -> bool:
    revocation = await uow.revocations.get(user_id)
    return revocation is not None and revocation.locked


async def log_out(uow: UsersUnitOfWork, refresh_token: str) -> None:
    """End the session the refresh token belongs to (its whole family). Unknown tokens are ignored."""
    async with uow:
        stored = await uow.refresh_tokens.get(token_digest(refresh_token))
        if stored is not None:
            await uow.refresh_tokens.revoke_family(stored.family_id, uow.clock.now())


async def _issue_tokens(
    uow: UsersUnitOfWork,
    identity: Identity,
    user_id: UserId,
    now: datetime,
    family_id: str | None = None,
    secret: str | None = None,
) -> TokenPair:
    """A new refresh token (`secret`, or a random one) in `family_id` (or a new family), and its access token."""
    secret = secret or new_opaque_token()
    token = RefreshToken(
        digest=token_digest(secret),
        family_id=family_id or str(uuid.uuid4()),
        user_id=user_id,
        expires_at=now + identity.refresh_lifetime,
    )
    await uow.refresh_tokens.add(token, now)
    return await _pair(uow, identity, token, secret, issued_at=now, now=now)


async def _pair(
    uow: UsersUnitOfWork, identity: Identity, token: RefreshToken, secret: str, *, issued_at: datetime, now: datetime
) -> TokenPair:
    """The refresh token and its access token, as issued at `issued_at`: the same inputs give the same pair."""
    key = signing_key_for(await uow.signing_keys.published(), issued_at)
    access = identity.signer.access_token(
        key, token.user_id, issued_at, session_id=token.family_id, token_id=access_token_id(secret)
    )
    left = issued_at + identity.signer.lifetime - now
    return TokenPair(access, secret, max(0, int(left.total_seconds())))


# --- locks by an administrator ----------------------------------------------------------------------------------


async def lock_account(uow: UsersUnitOfWork, *, email: str, reason: str) -> bool:
    """Lock the account of `email` (`gatherly users lock`): it cannot log in or refresh, its sessions end, and every
    service refuses its access tokens once `user.locked` reaches it. Returns False when it was locked already.

    The lock is the kernel's revoked-subjects row, written here in the same transaction as the event, so a login
    is refused from this commit on (this service's consumer then finds the row already there)."""
    address = _administered_address(email)
    why = clean_lock_reason(reason)
    async with uow:
        now = uow.clock.now()
        user_id = await _open_account_id(uow, address)
        if await _locked(uow, user_id):
            return False
        await uow.revocations.apply(RevocationChange(user_id, "locked", now), now)
        await uow.refresh_tokens.revoke_all_of(user_id, now)
        uow.publish(UserLocked(user_id=user_id, locked_at=now, reason=why))
    log.info("account locked", user_id=user_id, reason=why)
    return True


async def unlock_account(uow: UsersUnitOfWork, *, email: str) -> bool:
    """Lift the lock (`gatherly users unlock`): the person can log in again; access tokens issued before stay
    refused. Returns False when the account was not locked."""
    address = _administered_address(email)
    while True:
        async with uow:
            now = uow.clock.now()
            user_id = await _open_account_id(uow, address)
            revocation = await uow.revocations.get(user_id)
            if revocation is None or not revocation.locked:
                return False
            wait = wait_before_unlocking(revocation.as_of, now)
            if not wait:
                await uow.revocations.apply(RevocationChange(user_id, "unlocked", now), now)
                uow.publish(UserUnlocked(user_id=user_id, unlocked_at=now))
                break
        await asyncio.sleep(wait)  # under a second, outside the transaction; then look again
    log.info("account unlocked", user_id=user_id)
    return True


def _administered_address(email: str) -> Email:
    # Typed by an administrator, not through the API's text policy: NUL and lone surrogates are refused here.
    if text_problem(email):
        raise InvalidInput("This is not an email address.", field="email")
    return normalize_email(email)


async def _open_account_id(uow: UsersUnitOfWork, address: Email) -> UserId:
    credentials = await uow.accounts.credentials_of(address)
    if credentials is None or credentials.closed_at is not None:
        raise NoAccountWithEmail(address)
    return credentials.user_id


# --- password reset ---------------------------------------------------------------------------------------------


async def request_password_reset(uow: UsersUnitOfWork, identity: Identity, *, email: str, client: str) -> None:
    """Email a reset link when the address has an account; answer the same when it has none."""
    await _spend_rate_token(uow, identity, "password_reset", client)
    try:
        address = normalize_email(email)
    except InvalidInput:
        return
    async with uow:
        now = uow.clock.now()
        credentials = await uow.accounts.credentials_of(address)
        if credentials is None or await _being_deleted(uow, credentials.user_id):
            return
        profile = await _profile(uow, credentials.user_id)
        token = await _issue_one_time(uow, credentials.user_id, TokenPurpose.RESET_PASSWORD, now)
        await _queue(uow, address, identity.templates.password_reset(profile.display_name, token))


async def reset_password(uow: UsersUnitOfWork, identity: Identity, *, token: str, password: str) -> None:
    """Set a new password through a reset link: every session of the account ends, and a lockout is lifted.
    (Following the link also proves the mailbox is theirs, so an unconfirmed account becomes confirmed.)"""
    check_password_policy(password, identity.common_passwords)
    digest = token_digest(token)
    async with reading(uow.db) as stores:
        candidate = await stores.one_time_tokens.get(digest)
    # Checked before hashing, so junk tokens cannot make the service burn argon2 time.
    if candidate is None or not candidate.is_usable(TokenPurpose.RESET_PASSWORD, uow.clock.now()):
        raise InvalidLink()
    password_hash = await identity.passwords.hash(password)
    async with uow:
        now = uow.clock.now()
        stored = await _spend(uow, token, TokenPurpose.RESET_PASSWORD, now)
        credentials = await uow.accounts.credentials_by_id(stored.user_id)
        if credentials is None:
            raise InvalidLink()
        await uow.accounts.set_password(stored.user_id, password_hash)
        await uow.refresh_tokens.revoke_all_of(stored.user_id, now)
        await uow.one_time_tokens.use_all(stored.user_id, TokenPurpose.RESET_PASSWORD, now)
        # Recovering the account also stops a pending email change someone with the old password asked for.
        await uow.one_time_tokens.use_all(stored.user_id, TokenPurpose.CHANGE_EMAIL, now)
        if credentials.email is not None:
            await uow.throttles.clear(email_key(credentials.email))
        if credentials.confirmed_at is None:
            await _confirm(uow, await _profile(uow, stored.user_id), now)


# --- password and email changes (logged in) -----------------------------------------------------------------------


async def change_password(
    uow: UsersUnitOfWork, identity: Identity, me: Principal, *, current_password: str, new_password: str
) -> None:
    """Set a new password, given the current one. The refresh tokens of every other device are revoked; this
    device's session (the `sid` of the calling token) goes on. Wrong guesses count toward the login lockout, so
    a stolen access token cannot be used to try passwords faster than the login form allows."""
    check_password_policy(new_password, identity.common_passwords, field="new_password")
    credentials = await _check_password(uow, identity, me, current_password, field="current_password")
    password_hash = await identity.passwords.hash(new_password)
    async with uow:
        now = uow.clock.now()
        await uow.accounts.set_password(credentials.user_id, password_hash)
        session = me.claims.get("sid")
        await uow.refresh_tokens.revoke_all_of(
            credentials.user_id, now, except_family=session if isinstance(session, str) else None
        )
        # A reset link asked for earlier must not undo this change, nor a pending email change (asked for by
        # whoever knew the old password) move the account away.
        await uow.one_time_tokens.use_all(credentials.user_id, TokenPurpose.RESET_PASSWORD, now)
        await uow.one_time_tokens.use_all(credentials.user_id, TokenPurpose.CHANGE_EMAIL, now)


async def request_email_change(
    uow: UsersUnitOfWork, identity: Identity, me: Principal, *, new_email: str, password: str
) -> None:
    """Send a confirmation link to the new address and a notice to the old one; the old address stays the
    account's until the link is followed (confirm_email_change)."""
    try:
        address = normalize_email(new_email)
    except InvalidInput as error:
        raise InvalidInput(error.detail, field="new_email") from error
    credentials = await _check_password(uow, identity, me, password, field="password")
    if address == credentials.email:
        raise InvalidInput("This is already the account's email address.", field="new_email")
    async with uow:
        now = uow.clock.now()
        if await uow.accounts.credentials_of(address) is not None:
            raise EmailTaken()
        profile = await _profile(uow, credentials.user_id)
        # One pending change at a time: a new request voids the links of earlier ones.
        await uow.one_time_tokens.use_all(credentials.user_id, TokenPurpose.CHANGE_EMAIL, now)
        token = await _issue_one_time(uow, credentials.user_id, TokenPurpose.CHANGE_EMAIL, now, new_email=address)
        await _queue(uow, address, identity.templates.email_change(profile.display_name, token))
        if credentials.email is not None:
            notice = identity.templates.email_change_notice(profile.display_name, address)
            await _queue(uow, credentials.email, notice)


async def confirm_email_change(uow: UsersUnitOfWork, token: str) -> None:
    """Spend a change-email link: the account's address becomes the new one, and other services hear of it. The
    address may have been taken since the request (a sign-up, another change): then 409 and nothing changes."""
    try:
        async with uow:
            now = uow.clock.now()
            stored = await _spend(uow, token, TokenPurpose.CHANGE_EMAIL, now)
            credentials = await uow.accounts.credentials_by_id(stored.user_id)
            if credentials is None or credentials.closed_at is not None or stored.new_email is None:
                raise InvalidLink()
            owner = await uow.accounts.credentials_of(stored.new_email)
            if owner is not None:
                raise EmailTaken()
            await uow.accounts.set_email(stored.user_id, stored.new_email)
            # Login failures were counted against the old address; a reset link sent there is void now.
            await uow.one_time_tokens.use_all(stored.user_id, TokenPurpose.RESET_PASSWORD, now)
            profile = await _profile(uow, stored.user_id)
            profile = profile.changed(now)
            await uow.accounts.save_profile(profile)
            uow.publish(profile.published(await uow.avatars.get(profile.avatar_image_id)))
    except IntegrityError as error:
        # Two accounts confirmed the same new address at once: the unique index let only the first one in.
        if not is_unique_violation(error):
            raise
        raise EmailTaken() from error


async def _check_password(
    uow: UsersUnitOfWork, identity: Identity, me: Principal, password: str, *, field: str
) -> Credentials:
    """The caller's credentials when `password` is theirs; else WrongPassword (counted like a failed login) or
    AccountLocked. Checked off the event loop and outside any transaction, like a login."""
    now = uow.clock.now()
    async with reading(uow.db) as stores:
        credentials = await stores.accounts.credentials_by_id(me.user_id)
        _check_open(credentials)
        assert credentials is not None
        throttle_key = email_key(credentials.email) if credentials.email else None
        throttle = await stores.throttles.get(throttle_key) if throttle_key else None
    wait = throttle.retry_after(now) if throttle else None
    if wait is not None:
        raise AccountLocked(wait)
    if await identity.passwords.verify(credentials.password_hash, password):
        return credentials
    if throttle_key is not None:
        async with uow:
            now = uow.clock.now()
            throttle = await uow.throttles.get(throttle_key)
            await uow.throttles.save(throttle_key, throttle.after_failure(now), now)
    raise WrongPassword(field)


# --- one-time tokens and mail -------------------------------------------------------------------------------------


async def _issue_one_time(
    uow: UsersUnitOfWork,
    user_id: UserId,
    purpose: TokenPurpose,
    now: datetime,
    *,
    password_hash: str | None = None,
    display_name: str | None = None,
    new_email: Email | None = None,
) -> str:
    secret = new_opaque_token()
    token = OneTimeToken(
        digest=token_digest(secret),
        purpose=purpose,
        user_id=user_id,
        expires_at=now + TOKEN_LIFETIMES[purpose],
        password_hash=password_hash,
        display_name=display_name,
        new_email=new_email,
    )
    await uow.one_time_tokens.add(token, now)
    return secret


async def _spend(uow: UsersUnitOfWork, token: str, purpose: TokenPurpose, now: datetime) -> OneTimeToken:
    digest = token_digest(token)
    stored = await uow.one_time_tokens.get(digest)
    if stored is None or not stored.is_usable(purpose, now) or not await uow.one_time_tokens.use(digest, now):
        raise InvalidLink()
    return stored


async def _profile(uow: UsersUnitOfWork, user_id: str) -> Profile:
    profile = await uow.accounts.profile(user_id)
    if profile is None:
        raise UserNotFound(user_id)
    return profile


async def _queue(uow: UsersUnitOfWork, recipient: str, mail: RenderedMail) -> None:
    await uow.queue_mail(recipient, mail.subject, mail.text, mail.html)


# --- profiles ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileView:
    profile: Profile
    avatar: ImageVariants | None


async def my_profile(uow: UsersUnitOfWork, identity: Identity, me: Principal) -> ProfileView:
    async with reading(uow.db) as stores:
        profile = await stores.accounts.profile(me.user_id)
        if profile is not None:
            _check_open(profile)
            return ProfileView(profile, profile.avatar(await stores.avatars.get(profile.avatar_image_id)))
    if identity.external:
        return await _welcome_outside_identity(uow, me)
    raise AccountGone()


def _check_open(account: Profile | Credentials | None) -> None:
    """A valid token of an account that is gone or being deleted is refused like an invalid token (401)."""
    if account is None or (account.closed if isinstance(account, Profile) else account.closed_at is not None):
        raise AccountGone()


async def public_profile(db: Database, user_id: str) -> ProfileView:
    async with reading(db) as stores:
        profile = await stores.accounts.profile(user_id)
        if profile is None or not profile.confirmed or profile.closed:
            raise UserNotFound(user_id)
        return ProfileView(profile, profile.avatar(await stores.avatars.get(profile.avatar_image_id)))


# PATCH fields and how each is cleaned; a field left out stays as it is.
_CLEANERS: dict[str, Any] = {
    "display_name": clean_display_name,
    "bio": clean_bio,
    "city": clean_city,
    "location": clean_location,
    "topics": clean_topics,
    "avatar_image_id": clean_image_id,
}


async def update_profile(
    uow: UsersUnitOfWork, identity: Identity, me: Principal, changes: dict[str, Any]
) -> ProfileView:
    """Change any of display name, bio, city, location, topics and avatar; other services hear of it."""
    unknown = set(changes) - set(_CLEANERS)
    if unknown:
        raise InvalidInput(f"Not a profile field: {', '.join(sorted(unknown))}.", field=sorted(unknown)[0])
    if changes.get("display_name", "") is None or changes.get("bio", "") is None:
        raise InvalidInput(
            "A display name and bio cannot be null.", field="display_name" if "display_name" in changes else "bio"
        )
    if "topics" in changes and changes["topics"] is None:
        changes = {**changes, "topics": []}  # null clears the list, like the other optional fields
    cleaned = {name: _CLEANERS[name](value) for name, value in changes.items()}
    if identity.external:
        await my_profile(uow, identity, me)  # a person from an outside provider may edit before ever reading
    async with uow:
        now = uow.clock.now()
        profile = await uow.accounts.profile(me.user_id)
        _check_open(profile)
        assert profile is not None
        profile = profile.changed(now, **cleaned)
        await uow.accounts.save_profile(profile)
        avatar = await uow.avatars.get(profile.avatar_image_id)
        if profile.confirmed:
            uow.publish(profile.published(avatar))
        return ProfileView(profile, profile.avatar(avatar))


async def _welcome_outside_identity(uow: UsersUnitOfWork, me: Principal) -> ProfileView:
    """Someone an outside OIDC provider vouches for, seen for the first time: their account and profile are
    made from the token's claims, confirmed (the provider did that), and announced like a sign-up."""
    claims = me.claims
    email = claims.get("email") if claims.get("email_verified", True) else None
    address = normalize_email(email) if isinstance(email, str) else None
    name_claim = next(
        (claims[c] for c in ("name", "preferred_username", "given_name") if isinstance(claims.get(c), str)), ""
    )
    name = clean_display_name(name_claim or (address.split("@")[0] if address else "Member"))
    for attempt in (1, 2):
        try:
            async with uow:
                now = uow.clock.now()
                existing = await uow.accounts.profile(me.user_id)
                if existing is not None:
                    return ProfileView(existing, existing.avatar(await uow.avatars.get(existing.avatar_image_id)))
                if address is not None and await uow.accounts.credentials_of(address) is not None:
                    address = None  # the address belongs to a local account: not taken over by an outside claim
                profile = Profile(UserId(me.user_id), address, name, created_at=now, updated_at=now, confirmed=True)
                await uow.accounts.add(profile, password_hash=None, confirmed_at=now)
                uow.publish(
                    UserRegistered(user_id=me.user_id, email=address or "", display_name=name, registered_at=now)
                )
                await _confirm(uow, profile, now)
                return ProfileView(profile, None)
        except IntegrityError as error:
            if attempt == 2 or not is_unique_violation(error):
                raise
    raise AssertionError("unreachable")


# --- account deletion ------------------------------------------------------------------------------------------


async def delete_account(uow: UsersUnitOfWork, me: Principal, deadline: timedelta) -> AccountDeletion:
    """Start the account-deletion saga: the sessions end and the password stops working at once, other services
    hear `user.deleted` (with the deletion's id, which their replies name), and this service erases the account
    when that message comes back (`erase_account`). `deadline`: how long the saga may take before it fails."""
    async with uow:
        now = uow.clock.now()
        latest = await uow.deletions.latest_of(me.user_id)
        credentials = await uow.accounts.credentials_by_id(me.user_id)
        # Asked twice (or again with a token still valid after the erasure): the same deletion.
        if latest is not None and (latest.status is DeletionStatus.PENDING or credentials is None):
            return latest
        if credentials is None:
            raise UserNotFound(me.user_id)
        deletion = AccountDeletion(
            id=str(uuid.uuid4()),
            user_id=credentials.user_id,
            status=DeletionStatus.PENDING,
            reason=None,
            deadline_at=now + deadline,
            awaits=DELETION_PARTICIPANTS,
        )
        await uow.deletions.add(deletion, now)
        await uow.accounts.close(me.user_id, now)
        await uow.refresh_tokens.revoke_all_of(me.user_id, now)
        # Mails not sent yet (a reset link, an export's link, a change-email link to the new address) are not sent
        # to an account that is gone.
        addresses = [a for a in [credentials.email, *await uow.one_time_tokens.pending_new_emails(me.user_id)] if a]
        dropped = await uow.mail.drop_to(addresses)
        for purpose in TokenPurpose:  # an emailed reset link must not bring the account back meanwhile
            await uow.one_time_tokens.use_all(me.user_id, purpose, now)
        # An export being made ends here: its archive is deleted by the images service, so it is never `ready`.
        for export in await uow.exports.pending_of(me.user_id):
            await uow.exports.save(replace(export, status=ExportStatus.FAILED, reason=ACCOUNT_DELETED), now)
        log.info("account deletion started", deletion_id=deletion.id, unsent_mails_dropped=dropped)
        uow.publish(UserDeleted(user_id=me.user_id, deleted_at=now, deletion_id=deletion.id))
        return deletion


async def _being_deleted(uow: UsersUnitOfWork, user_id: str) -> bool:
    deletion = await uow.deletions.latest_of(user_id)
    return deletion is not None and deletion.status is DeletionStatus.PENDING


async def deletion_of(db: Database, me: Principal) -> AccountDeletion:
    async with reading(db) as stores:
        deletion = await stores.deletions.latest_of(me.user_id)
    if deletion is None:
        raise NoDeletion()
    return deletion


async def erase_account(uow: UsersUnitOfWork, event: UserDeleted) -> None:
    """The saga's step here: the account goes with its profile and tokens, recorded as the reply of "users". Only
    while a deletion is pending, so a replayed `user.deleted` cannot erase an account an outside identity provider's
    person made again later."""
    if event.deletion_id is not None:
        deletion = await uow.deletions.get(event.deletion_id, for_update=True)
    else:  # written before user.deleted named its deletion
        deletion = await uow.deletions.latest_of(event.user_id)
    if deletion is None or deletion.user_id != event.user_id or deletion.status is not DeletionStatus.PENDING:
        return
    await uow.accounts.erase(event.user_id)
    await _record_step(uow, deletion.id, OWN_ERASURE, {"accounts": 1})


async def record_deletion_step(uow: UsersUnitOfWork, reply: UserDeletionStepDone) -> None:
    """Another service's reply: recorded once per service (a repeat changes nothing); the deletion completes when
    the last one expected comes in. A reply for a deletion that failed meanwhile is kept for the record only."""
    if reply.service not in DELETION_PARTICIPANTS or not is_deletion_id(reply.deletion_id):
        log.warning("deletion reply from no participant or for no deletion", service=reply.service[:64])
        return
    current = await uow.deletions.get(reply.deletion_id)
    if current is None or current.user_id != reply.user_id:
        log.warning("deletion reply for no such deletion", deletion_id=reply.deletion_id, service=reply.service)
        return
    await _record_step(uow, reply.deletion_id, reply.service, reply.what, at=reply.done_at)


async def _record_step(
    uow: UsersUnitOfWork, deletion_id: str, who: str, what: dict[str, int], at: datetime | None = None
) -> None:
    now = uow.clock.now()
    recorded = await uow.deletions.record_reply(deletion_id, who, at or now, now, what)
    if recorded is None:
        return
    deletion, new = recorded
    if new and deletion.status is DeletionStatus.PENDING and deletion.is_done:
        await uow.deletions.finish(deletion.id, DeletionStatus.COMPLETED, now)
        log.info("account deletion completed", deletion_id=deletion.id, answered=list(deletion.answered))


async def fail_overdue_deletions(uow: UsersUnitOfWork) -> int:
    """Deletions not finished by their deadline are failed, naming who did not answer (the person can ask again);
    returns how many."""
    async with uow:
        now = uow.clock.now()
        failed = 0
        for deletion in await uow.deletions.overdue(now):
            reason = deletion.overdue_reason
            if await uow.deletions.finish(deletion.id, DeletionStatus.FAILED, now, reason):
                log.error(
                    "account deletion failed",
                    deletion_id=deletion.id,
                    user_id=deletion.user_id,
                    missing=list(deletion.missing),
                    reason=reason,
                )
                failed += 1
        return failed


# --- data export -----------------------------------------------------------------------------------------------


async def request_export(uow: UsersUnitOfWork, me: Principal, *, deadline: timedelta, per_day: int) -> DataExport:
    """Start the data-export saga: every service hears `user.export_requested` and answers with its part. Asked
    again while one is pending (and within its deadline), the person gets that one, not a second; at most
    `per_day` in any 24 hours (domain.export_to_give)."""
    async with uow:
        now = uow.clock.now()
        # The account's row lock: two requests at the same moment (PostgreSQL runs them side by side) would each
        # see no export being made and start one each; the second now waits and gets the first's.
        _check_open(await uow.accounts.credentials_by_id(me.user_id, for_update=True))
        recent = await uow.exports.requested_since(me.user_id, now - EXPORT_LIMIT_WINDOW)
        existing = export_to_give(recent, now, per_day=per_day)
        if existing is not None:
            return existing
        export = DataExport(
            id=str(uuid.uuid4()),
            user_id=UserId(me.user_id),
            status=ExportStatus.PENDING,
            reason=None,
            deadline_at=now + deadline,
            requested_at=now,
        )
        await uow.exports.add(export, now)
        uow.publish(UserExportRequested(user_id=me.user_id, export_id=export.id, requested_at=now))
        return export


async def export_of(db: Database, me: Principal, export_id: str) -> DataExport:
    """One of the person's own exports; anyone else's is not found, like one that does not exist."""
    async with reading(db) as stores:
        export = await stores.exports.get(export_id)
    if export is None or export.user_id != me.user_id:
        raise NoExport()
    return export


async def give_profile_part(uow: UsersUnitOfWork, event: UserExportRequested) -> None:
    """The users service's own part: the account and profile (no password hash, no tokens: secrets, not data)."""
    profile = await uow.accounts.profile(event.user_id)
    files = {"users/profile.json": profile} if profile is not None else {}
    uow.publish(export_part(event, "users", files, uow.clock.now()))


async def record_export_part(uow: UsersUnitOfWork, event: UserExportPartReady | UserExportPartFailed) -> None:
    """A service answered: its part is counted, or its failure fails the export with its reason."""
    export = await uow.exports.get(event.export_id)
    if export is None or export.user_id != event.user_id or export.status is not ExportStatus.PENDING:
        return
    if isinstance(event, UserExportPartFailed):
        export = replace(export, status=ExportStatus.FAILED, reason=event.reason)
        log.error("data export failed", export_id=export.id, service=event.service, reason=event.reason)
    else:
        export = export.with_part(event.service)
    await uow.exports.save(export, uow.clock.now())


async def finish_export(uow: UsersUnitOfWork, event: UserExportArchiveReady) -> None:
    """The archive is written: the export is ready and the person gets the link by email."""
    export = await uow.exports.get(event.export_id)
    if export is None or export.user_id != event.user_id or export.status is not ExportStatus.PENDING:
        return
    export = replace(export, status=ExportStatus.READY, download_url=event.download_url, expires_at=event.expires_at)
    await uow.exports.save(export, uow.clock.now())
    profile = await uow.accounts.profile(event.user_id)
    if profile is not None and profile.email is not None and not profile.closed:
        mail = templates_at(uow.public_url).export_ready(profile.display_name, event.download_url, event.expires_at)
        await _queue(uow, profile.email, mail)


async def fail_overdue_exports(uow: UsersUnitOfWork) -> int:
    """Exports not ready by their deadline are failed, naming the services that did not answer; returns how many."""
    async with uow:
        now = uow.clock.now()
        failed = 0
        for export in await uow.exports.overdue(now):
            reason = export.timeout_reason()
            if await uow.exports.save(replace(export, status=ExportStatus.FAILED, reason=reason), now):
                log.error("data export timed out", export_id=export.id, user_id=export.user_id, silent=export.silent())
                failed += 1
        return failed


# --- avatars (reactions to the images service) --------------------------------------------------------------------


async def keep_ready_image(uow: UsersUnitOfWork, event: ImageReady) -> None:
    """Remember ready avatars; whoever already chose this image now shows it, and other services hear of it."""
    if event.purpose != AVATAR_PURPOSE:
        return
    await uow.avatars.keep(event)
    avatar = Avatar(event.image_id, event.owner_id, event.variants)
    now = uow.clock.now()
    for profile in await uow.accounts.profiles_showing(event.image_id):
        if profile.avatar(avatar) is not None and profile.confirmed:
            updated = profile.changed(now)
            await uow.accounts.save_profile(updated)
            uow.publish(updated.published(avatar))


async def forget_deleted_image(uow: UsersUnitOfWork, event: ImageDeleted) -> None:
    """A deleted image stops being anyone's avatar."""
    avatar = await uow.avatars.get(event.image_id)
    await uow.avatars.remove(event.image_id)
    now = uow.clock.now()
    for profile in await uow.accounts.profiles_showing(event.image_id):
        updated = profile.changed(now, avatar_image_id=None)
        await uow.accounts.save_profile(updated)
        if profile.avatar(avatar) is not None and profile.confirmed:
            uow.publish(updated.published(None))


# --- housekeeping ----------------------------------------------------------------------------------------------

# Expired rows are kept a day (a support question about "my link did not work" can still be answered), then go.
KEEP_EXPIRED = timedelta(days=1)
RATE_BUCKETS_IDLE = timedelta(hours=1)  # a bucket idle for a minute is full again: its row says nothing more


async def forget_expired(uow: UsersUnitOfWork) -> int:
    """Delete refresh and link tokens expired over a day ago and login throttles idle for a day (a lockout lasts
    at most 15 minutes, so those only hold old failure counts). Returns how many rows went."""
    async with uow:
        cutoff = uow.clock.now() - KEEP_EXPIRED
        return (
            await uow.refresh_tokens.prune(cutoff)
            + await uow.one_time_tokens.prune(cutoff)
            + await uow.throttles.prune(cutoff)
            + await uow.rate_buckets.prune(uow.clock.now() - RATE_BUCKETS_IDLE)
        )


# --- signing keys ----------------------------------------------------------------------------------------------


async def ensure_signing_key(uow: UsersUnitOfWork) -> None:
    """At start: a fresh installation gets its first key, usable at once."""
    async with uow:
        if not await uow.signing_keys.published():
            await uow.signing_keys.add(new_signing_key(uow.clock.now()))


@dataclass(frozen=True)
class Rotation:
    new_kid: str
    activates_at: datetime
    retired: list[str]


async def rotate_signing_keys(uow: UsersUnitOfWork, settings: Settings) -> Rotation:
    """Add a key (published now, signing after the activation delay) and retire keys no live token can name."""
    async with uow:
        now = uow.clock.now()
        keys = await uow.signing_keys.all()
        retired = retirable(keys, now, token_lifetime(settings))
        await uow.signing_keys.retire(retired, now)
        key = new_signing_key(now, activates_at=now + timedelta(seconds=settings.signing_key_activation_seconds))
        await uow.signing_keys.add(key)
        return Rotation(key.kid, key.activates_at, retired)


def token_lifetime(settings: Settings) -> timedelta:
    # A token stays valid for its lifetime plus the verifiers' clock leeway; a margin on top costs nothing.
    return timedelta(seconds=settings.access_token_ttl_seconds) + timedelta(minutes=1)


async def rotate_keys_of(db: Database, settings: Settings) -> Rotation:
    """For `gatherly keys rotate`, which runs beside (or without) a running users service."""
    await ensure_signing_key(UsersUnitOfWork(db))
    return await rotate_signing_keys(UsersUnitOfWork(db), settings)


async def keys_of(db: Database) -> list[StoredKey]:
    async with reading(db) as stores:
        return await stores.signing_keys.all()


def openid_configuration(identity: Identity) -> OpenIdConfiguration:
    """The discovery document of this issuer. With an outside provider issuing the tokens, that provider's
    document is the one to use: this service has none (404)."""
    if identity.external:
        raise NotFound("Tokens are issued by an outside identity provider; use its discovery document.")
    settings = identity.settings
    return OpenIdConfiguration(
        issuer=settings.effective_issuer,
        jwks_uri=f"{settings.effective_public_url}/.well-known/jwks.json",
        # Access tokens are handed out directly by POST /api/auth/login (no authorization endpoint, no ID tokens).
        response_types_supported=["token"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=[ALGORITHM],
        claims_supported=["iss", "aud", "sub", "iat", "exp", "jti", "sid"],
    )


def authorization_server_metadata(identity: Identity) -> AuthorizationServerMetadata:
    """RFC 8414's form of the same facts, for clients that want an honest document rather than OpenID Connect's,
    whose authorization endpoint is required and which Gatherly does not have."""
    discovery = openid_configuration(identity)
    return AuthorizationServerMetadata(
        issuer=discovery.issuer, jwks_uri=discovery.jwks_uri, grant_types_supported=[], response_types_supported=[]
    )


async def published_keys(db: Database) -> dict[str, Any]:
    async with reading(db) as stores:
        return jwks(await stores.signing_keys.published())
