"""Stores of the users service (the queries that need SQL) and its unit of work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gatherly.contracts.users import GeoPoint
from gatherly.kernel.clock import Clock
from gatherly.kernel.db import Database, Executor, rowcount
from gatherly.kernel.fixed_reads import FixedRead, FixedWrite
from gatherly.kernel.read_models import ReadyImageStore
from gatherly.kernel.revocation import RevocationStore
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.sagas import SagaState, SagaStore
from gatherly.kernel.uow import OutboxSignal, UnitOfWork
from gatherly.users.domain import (
    ACCOUNT_DELETION,
    DATA_EXPORT,
    AccountDeletion,
    DataExport,
    DeletionStatus,
    Email,
    ExportStatus,
    LoginThrottle,
    OneTimeToken,
    Profile,
    RateBucket,
    RefreshToken,
    TokenPurpose,
    UserId,
)
from gatherly.users.tables import (
    accounts,
    avatar_images,
    login_throttles,
    mail_outbox,
    one_time_tokens,
    profiles,
    rate_buckets,
    refresh_tokens,
    signing_keys,
)

# --- stores -----------------------------------------------------------------------------------------------------


# Built once: statements on the request path skip SQLAlchemy's per-call construction and cache-key work.
PROFILE_BY_ID = (
    select(accounts, profiles)
    .join(profiles, profiles.c.user_id == accounts.c.id)
    .where(accounts.c.id == bindparam("user_id"))
)

FIND_PROFILE = FixedRead(PROFILE_BY_ID)
# A profile's edit (PATCH /api/users/me), run on sqlite3 directly inside the write transaction on inline SQLite
# (FixedWrite): built per call through SQLAlchemy it was over half of the edit's use case. The row is named by `key`:
# through SQLAlchemy (PostgreSQL) a parameter named after a column not in its SET would be one more to set.
PROFILE_VALUES = ("display_name", "bio", "city", "lat", "lng", "topics", "avatar_image_id", "updated_at")
SAVE_PROFILE = FixedWrite(
    update(profiles)
    .where(profiles.c.user_id == bindparam("key"))
    .values({name: bindparam(name) for name in PROFILE_VALUES})
)


class AccountStore:
    """Accounts and their profiles (one person = one row in each)."""

    def __init__(self, session: Executor) -> None:
        self.session = session

    async def credentials_of(self, email: Email) -> Credentials | None:
        row = (await self.session.execute(select(accounts).where(accounts.c.email == email))).mappings().first()
        return Credentials.of(row) if row else None

    async def credentials_by_id(self, user_id: str, *, for_update: bool = False) -> Credentials | None:
        """The account; with `for_update` its row stays locked until the transaction ends (PostgreSQL; SQLite's
        writer is alone anyway): a person's requests that must not run side by side wait for each other."""
        query = select(accounts).where(accounts.c.id == user_id)
        row = (await self.session.execute(query.with_for_update() if for_update else query)).mappings().first()
        return Credentials.of(row) if row else None

    async def add(self, profile: Profile, password_hash: str | None, confirmed_at: datetime | None = None) -> None:
        await self.session.execute(
            insert(accounts).values(
                id=profile.user_id,
                email=profile.email,
                password_hash=password_hash,
                created_at=profile.created_at,
                confirmed_at=confirmed_at,
            )
        )
        await self.session.execute(insert(profiles).values(user_id=profile.user_id, **_profile_values(profile)))

    async def set_email(self, user_id: str, email: Email) -> None:
        await self.session.execute(update(accounts).where(accounts.c.id == user_id).values(email=email))

    async def set_password(self, user_id: str, password_hash: str) -> None:
        await self.session.execute(update(accounts).where(accounts.c.id == user_id).values(password_hash=password_hash))

    async def close(self, user_id: str, at: datetime) -> None:
        """At deletion: no password logs in any more (a login is then checked against the decoy hash, like an
        unknown address) and the account counts as closed. Not the login lockout, which is LoginThrottleStore's."""
        await self.session.execute(
            update(accounts).where(accounts.c.id == user_id).values(password_hash=None, closed_at=at)
        )

    async def erase(self, user_id: str) -> None:
        # The profile, refresh tokens and link tokens go with the account (ON DELETE CASCADE).
        await self.session.execute(delete(accounts).where(accounts.c.id == user_id))

    async def confirm(self, user_id: str, at: datetime) -> None:
        await self.session.execute(update(accounts).where(accounts.c.id == user_id).values(confirmed_at=at))

    async def profile(self, user_id: str) -> Profile | None:
        row = await FIND_PROFILE.first(self.session, {"user_id": user_id})
        return _profile_of(row) if row else None

    async def save_profile(self, profile: Profile) -> None:
        await SAVE_PROFILE.execute(self.session, {"key": profile.user_id, **_profile_values(profile)})

    async def profiles_showing(self, image_id: str) -> list[Profile]:
        query = select(accounts, profiles).join(profiles, profiles.c.user_id == accounts.c.id)
        rows = (await self.session.execute(query.where(profiles.c.avatar_image_id == image_id))).mappings()
        return [_profile_of(row) for row in rows]


@dataclass(frozen=True)
class Credentials:
    user_id: UserId
    email: Email | None
    password_hash: str | None
    confirmed_at: datetime | None
    closed_at: datetime | None = None

    @classmethod
    def of(cls, row: RowMapping) -> Credentials:
        return cls(UserId(row["id"]), row["email"], row["password_hash"], row["confirmed_at"], row["closed_at"])


def _profile_values(profile: Profile) -> dict[str, Any]:
    return {
        "display_name": profile.display_name,
        "bio": profile.bio,
        "city": profile.city,
        "lat": profile.location.lat if profile.location else None,
        "lng": profile.location.lng if profile.location else None,
        "topics": list(profile.topics),
        "avatar_image_id": profile.avatar_image_id,
        "updated_at": profile.updated_at,
    }


def _profile_of(row: Mapping[Any, Any]) -> Profile:
    location = GeoPoint(lat=row["lat"], lng=row["lng"]) if row["lat"] is not None else None
    return Profile(
        user_id=UserId(row["id"]),
        email=row["email"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        bio=row["bio"],
        city=row["city"],
        location=location,
        topics=list(row["topics"] or []),
        avatar_image_id=row["avatar_image_id"],
        confirmed=row["confirmed_at"] is not None,
        closed=row["closed_at"] is not None,
    )


class RefreshTokenStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, token: RefreshToken, issued_at: datetime) -> None:
        await self.session.execute(
            insert(refresh_tokens).values(
                digest=token.digest,
                family_id=token.family_id,
                user_id=token.user_id,
                issued_at=issued_at,
                expires_at=token.expires_at,
            )
        )

    async def get(self, digest: str) -> RefreshToken | None:
        row = (
            (await self.session.execute(select(refresh_tokens).where(refresh_tokens.c.digest == digest)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return RefreshToken(
            digest=row["digest"],
            family_id=row["family_id"],
            user_id=UserId(row["user_id"]),
            expires_at=row["expires_at"],
            used_at=row["used_at"],
            revoked_at=row["revoked_at"],
            successor_nonce=row["successor_nonce"],
        )

    async def mark_used(self, digest: str, at: datetime, successor_nonce: str) -> bool:
        """Retire a token, noting the nonce of its successor; False when another request retired it first."""
        result = await self.session.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.digest == digest, refresh_tokens.c.used_at.is_(None))
            .values(used_at=at, successor_nonce=successor_nonce)
        )
        return rowcount(result) == 1

    async def revoke_family(self, family_id: str, at: datetime) -> None:
        await self.session.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def revoke_all_of(self, user_id: str, at: datetime, *, except_family: str | None = None) -> None:
        query = update(refresh_tokens).where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        if except_family is not None:
            query = query.where(refresh_tokens.c.family_id != except_family)
        await self.session.execute(query.values(revoked_at=at))

    async def prune(self, before: datetime) -> int:
        result = await self.session.execute(delete(refresh_tokens).where(refresh_tokens.c.expires_at < before))
        return rowcount(result)


class OneTimeTokenStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, token: OneTimeToken, created_at: datetime) -> None:
        await self.session.execute(
            insert(one_time_tokens).values(
                digest=token.digest,
                purpose=token.purpose.value,
                user_id=token.user_id,
                created_at=created_at,
                expires_at=token.expires_at,
                password_hash=token.password_hash,
                display_name=token.display_name,
                new_email=token.new_email,
            )
        )

    async def get(self, digest: str) -> OneTimeToken | None:
        row = (
            (await self.session.execute(select(one_time_tokens).where(one_time_tokens.c.digest == digest)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return OneTimeToken(
            digest=row["digest"],
            purpose=TokenPurpose(row["purpose"]),
            user_id=UserId(row["user_id"]),
            expires_at=row["expires_at"],
            used_at=row["used_at"],
            password_hash=row["password_hash"],
            display_name=row["display_name"],
            new_email=row["new_email"],
        )

    async def use(self, digest: str, at: datetime) -> bool:
        """Spend a token; False when it was spent already (two clicks racing: only one wins)."""
        result = await self.session.execute(
            update(one_time_tokens)
            .where(one_time_tokens.c.digest == digest, one_time_tokens.c.used_at.is_(None))
            .values(used_at=at)
        )
        return rowcount(result) == 1

    async def pending_new_emails(self, user_id: str) -> list[str]:
        """The addresses the person's unused change-email links would confirm (each was mailed a link)."""
        query = select(one_time_tokens.c.new_email).where(
            one_time_tokens.c.user_id == user_id,
            one_time_tokens.c.purpose == TokenPurpose.CHANGE_EMAIL.value,
            one_time_tokens.c.used_at.is_(None),
            one_time_tokens.c.new_email.is_not(None),
        )
        return list((await self.session.execute(query)).scalars())

    async def use_all(self, user_id: str, purpose: TokenPurpose, at: datetime) -> None:
        await self.session.execute(
            update(one_time_tokens)
            .where(
                one_time_tokens.c.user_id == user_id,
                one_time_tokens.c.purpose == purpose.value,
                one_time_tokens.c.used_at.is_(None),
            )
            .values(used_at=at)
        )

    async def prune(self, before: datetime) -> int:
        result = await self.session.execute(delete(one_time_tokens).where(one_time_tokens.c.expires_at < before))
        return rowcount(result)


class LoginThrottleStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def get(self, email_key: str) -> LoginThrottle:
        row = (
            (await self.session.execute(select(login_throttles).where(login_throttles.c.email_key == email_key)))
            .mappings()
            .first()
        )
        return LoginThrottle(row["failures"], row["locked_until"]) if row else LoginThrottle()

    async def save(self, email_key: str, throttle: LoginThrottle, now: datetime) -> None:
        values = {"failures": throttle.failures, "locked_until": throttle.locked_until, "updated_at": now}
        result = await self.session.execute(
            update(login_throttles).where(login_throttles.c.email_key == email_key).values(**values)
        )
        if rowcount(result) == 0:
            await self.session.execute(insert(login_throttles).values(email_key=email_key, **values))

    async def clear(self, email_key: str) -> None:
        await self.session.execute(delete(login_throttles).where(login_throttles.c.email_key == email_key))

    async def prune(self, before: datetime) -> int:
        result = await self.session.execute(delete(login_throttles).where(login_throttles.c.updated_at < before))
        return rowcount(result)


class RateBucketStore:
    """Rate-limit buckets shared by every process: taken under a row lock, so concurrent requests of one client on
    several processes spend one token each."""

    def __init__(self, session: Executor) -> None:
        self.session = session

    async def locked(self, action: str, client: str, now: datetime, full: float) -> RateBucket:
        """The bucket, locked until the transaction ends (made full first if the client is new)."""
        key = (rate_buckets.c.action == action) & (rate_buckets.c.client == client)
        result = await self.session.execute(
            update(rate_buckets).where(key).values(tokens=rate_buckets.c.tokens)  # takes the row lock, if any
        )
        if rowcount(result) == 0:
            # Another process may make the same row at the same moment: then its row stands, locked by its insert.
            bind = self.session.get_bind() if isinstance(self.session, AsyncSession) else self.session
            dialect = bind.dialect.name
            insert_new = (sqlite_insert if dialect == "sqlite" else postgresql_insert)(rate_buckets)
            await self.session.execute(
                insert_new.values(action=action, client=client, tokens=full, updated_at=now).on_conflict_do_nothing()
            )
        row = (await self.session.execute(select(rate_buckets.c.tokens, rate_buckets.c.updated_at).where(key))).one()
        return RateBucket(row.tokens, row.updated_at)

    async def save(self, action: str, client: str, bucket: RateBucket) -> None:
        key = (rate_buckets.c.action == action) & (rate_buckets.c.client == client)
        await self.session.execute(
            update(rate_buckets).where(key).values(tokens=bucket.tokens, updated_at=bucket.updated)
        )

    async def prune(self, before: datetime) -> int:
        result = await self.session.execute(delete(rate_buckets).where(rate_buckets.c.updated_at < before))
        return rowcount(result)


@dataclass(frozen=True)
class StoredKey:
    kid: str
    algorithm: str
    private_key: str
    public_jwk: dict[str, Any]
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None


class SigningKeyStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, key: StoredKey) -> None:
        await self.session.execute(
            insert(signing_keys).values(
                kid=key.kid,
                algorithm=key.algorithm,
                private_key=key.private_key,
                public_jwk=key.public_jwk,
                created_at=key.created_at,
                activates_at=key.activates_at,
            )
        )

    async def all(self) -> list[StoredKey]:
        rows = (await self.session.execute(select(signing_keys).order_by(signing_keys.c.activates_at))).mappings()
        return [StoredKey(**row) for row in rows]

    async def published(self) -> list[StoredKey]:
        query = select(signing_keys).where(signing_keys.c.retired_at.is_(None)).order_by(signing_keys.c.activates_at)
        return [StoredKey(**row) for row in (await self.session.execute(query)).mappings()]

    async def retire(self, kids: Sequence[str], at: datetime) -> None:
        if kids:
            await self.session.execute(update(signing_keys).where(signing_keys.c.kid.in_(kids)).values(retired_at=at))


class DeletionStore:
    """Account-deletion sagas, kept in the kernel's sagas table: `data` holds the user id, the services it awaits
    and their replies (the kernel's `data["replies"]`, the users service's own erasure as "users")."""

    def __init__(self, session: Executor) -> None:
        self.sagas = SagaStore(session, ACCOUNT_DELETION)

    async def add(self, deletion: AccountDeletion, now: datetime) -> None:
        await self.sagas.start(
            deletion.id,
            step="await_replies",
            data={"user_id": deletion.user_id, "awaits": list(deletion.awaits)},
            deadline_at=deletion.deadline_at,
            now=now,
        )

    async def get(self, deletion_id: str, *, for_update: bool = False) -> AccountDeletion | None:
        saga = await self.sagas.get(deletion_id, for_update=for_update)
        return _deletion_of(saga) if saga else None

    async def latest_of(self, user_id: str) -> AccountDeletion | None:
        # Only a few rarely used calls look deletions up by person: the JSON field has no index.
        saga = await self.sagas.latest_with("user_id", user_id)
        return _deletion_of(saga) if saga else None

    async def overdue(self, now: datetime) -> list[AccountDeletion]:
        return [_deletion_of(saga) for saga in await self.sagas.overdue(now)]

    async def record_reply(
        self, deletion_id: str, who: str, at: datetime, now: datetime, what: dict[str, int]
    ) -> tuple[AccountDeletion, bool] | None:
        """Record `who`'s reply once (the saga's row locked meanwhile); the deletion and whether the reply was new,
        or None for an unknown deletion."""
        recorded = await self.sagas.record_reply(deletion_id, who, at, now, {"what": what})
        if recorded is None:
            return None
        saga, new = recorded
        return _deletion_of(saga), new

    async def finish(self, deletion_id: str, status: DeletionStatus, now: datetime, reason: str | None = None) -> bool:
        """Move a pending deletion to its end; False when it had ended already (erased vs timed out racing)."""
        return await self.sagas.move(
            deletion_id, now, status=status.value, step="done", reason=reason, only_if_pending=True
        )


class ExportStore:
    """Data-export sagas, kept in the kernel's sagas table (`data`: the user id, the parts in, the archive)."""

    def __init__(self, session: Executor) -> None:
        self.sagas = SagaStore(session, DATA_EXPORT)

    async def add(self, export: DataExport, now: datetime) -> None:
        await self.sagas.start(
            export.id, step="collect_parts", data=_export_data(export), deadline_at=export.deadline_at, now=now
        )

    async def get(self, export_id: str) -> DataExport | None:
        saga = await self.sagas.get(export_id)
        return _export_of(saga) if saga else None

    async def pending_of(self, user_id: str) -> list[DataExport]:
        return [_export_of(saga) for saga in await self.sagas.pending_with("user_id", user_id)]

    async def requested_since(self, user_id: str, since: datetime) -> list[DataExport]:
        return [_export_of(saga) for saga in await self.sagas.started_with("user_id", user_id, since)]

    async def overdue(self, now: datetime) -> list[DataExport]:
        return [_export_of(saga) for saga in await self.sagas.overdue(now)]

    async def save(self, export: DataExport, now: datetime) -> bool:
        """Record a pending export's parts, end or archive; False when it had ended already."""
        step = "collect_parts" if export.status is ExportStatus.PENDING else "done"
        return await self.sagas.move(
            export.id,
            now,
            status=export.status.value,
            step=step,
            reason=export.reason,
            data=_export_data(export),
            only_if_pending=True,
        )


def _export_data(export: DataExport) -> dict[str, Any]:
    return {
        "user_id": export.user_id,
        "parts": list(export.parts),
        "download_url": export.download_url,
        "expires_at": export.expires_at.isoformat() if export.expires_at else None,
    }


def _export_of(saga: SagaState) -> DataExport:
    assert saga.deadline_at is not None and saga.created_at is not None  # every export is started with them
    expires_at = saga.data.get("expires_at")
    return DataExport(
        id=saga.id,
        user_id=UserId(saga.data["user_id"]),
        status=ExportStatus(saga.status),
        reason=saga.reason,
        deadline_at=saga.deadline_at,
        requested_at=saga.created_at,
        parts=tuple(saga.data.get("parts", ())),
        download_url=saga.data.get("download_url"),
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
    )


def _deletion_of(saga: SagaState) -> AccountDeletion:
    assert saga.deadline_at is not None  # every account deletion is started with one
    return AccountDeletion(
        id=saga.id,
        user_id=UserId(saga.data["user_id"]),
        status=DeletionStatus(saga.status),
        reason=saga.reason,
        deadline_at=saga.deadline_at,
        awaits=tuple(saga.data.get("awaits", ())),
        answered=tuple(saga.replies),
    )


@dataclass(frozen=True)
class OutgoingMail:
    id: str
    recipient: str
    subject: str
    text: str
    html: str | None
    attempts: int


class MailOutboxStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, recipient: str, subject: str, text: str, html: str | None, now: datetime) -> None:
        await self.session.execute(
            insert(mail_outbox).values(
                id=str(uuid.uuid4()),
                recipient=recipient,
                subject=subject,
                text=text,
                html=html,
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )

    async def claim_due(self, now: datetime, until: datetime, limit: int) -> list[OutgoingMail]:
        """Take up to `limit` messages due now for sending until `until` (another sender skips them meanwhile).
        On PostgreSQL the rows another sender's claim holds locked are skipped (SKIP LOCKED): replicas take
        different messages at once instead of waiting for each other's claims. SQLite lets one writer in at a time."""
        query = (
            select(mail_outbox)
            .where(mail_outbox.c.next_attempt_at <= now)
            .order_by(mail_outbox.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list((await self.session.execute(query)).mappings())
        if rows:
            taken = mail_outbox.c.id.in_([row["id"] for row in rows])
            await self.session.execute(update(mail_outbox).where(taken).values(next_attempt_at=until))
        return [
            OutgoingMail(row["id"], row["recipient"], row["subject"], row["text"], row["html"], row["attempts"])
            for row in rows
        ]

    async def release(self, mail_ids: Collection[str], claimed_until: datetime, now: datetime) -> None:
        """Make claimed messages due again now (their round stopped before trying them). A claim that is no longer
        this one (its time differs: taken over after it lapsed) is left to its new holder."""
        await self.session.execute(
            update(mail_outbox)
            .where(mail_outbox.c.id.in_(mail_ids), mail_outbox.c.next_attempt_at == claimed_until)
            .values(next_attempt_at=now)
        )

    async def drop_to(self, recipients: Collection[str]) -> int:
        """Drop the mails not yet sent to these addresses; returns how many."""
        return rowcount(await self.session.execute(delete(mail_outbox).where(mail_outbox.c.recipient.in_(recipients))))

    async def is_queued(self, mail_id: str) -> bool:
        """Whether the message is still waiting to be sent (not dropped meanwhile, e.g. by an account deletion)."""
        return await self.session.scalar(select(mail_outbox.c.id).where(mail_outbox.c.id == mail_id)) is not None

    async def sent(self, mail_id: str) -> None:
        # Deleted once delivered: the rows hold live link tokens that should not outlive their purpose.
        await self.session.execute(delete(mail_outbox).where(mail_outbox.c.id == mail_id))

    async def failed(self, mail_id: str, error: str, retry_at: datetime) -> None:
        await self.session.execute(
            update(mail_outbox)
            .where(mail_outbox.c.id == mail_id)
            .values(attempts=mail_outbox.c.attempts + 1, last_error=error[:2000], next_attempt_at=retry_at)
        )

    async def next_due_at(self) -> datetime | None:
        value: datetime | None = await self.session.scalar(select(func.min(mail_outbox.c.next_attempt_at)))
        return value

    async def pending(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(mail_outbox)) or 0)


# --- unit of work -----------------------------------------------------------------------------------------------


class Stores:
    """Every store of the service on one connection or session (listed once: the unit of work is one too)."""

    def __init__(self, session: Executor) -> None:
        self.accounts = AccountStore(session)
        self.refresh_tokens = RefreshTokenStore(session)
        self.one_time_tokens = OneTimeTokenStore(session)
        self.throttles = LoginThrottleStore(session)
        self.rate_buckets = RateBucketStore(session)
        self.signing_keys = SigningKeyStore(session)
        self.avatars = ReadyImageStore(session, avatar_images)
        self.mail = MailOutboxStore(session)
        self.deletions = DeletionStore(session)
        self.revocations = RevocationStore(session)  # the kernel's table: accounts locked (or deleted)
        self.exports = ExportStore(session)


class UsersUnitOfWork(UnitOfWork, Stores):
    """One transaction of the users service: its stores plus the outbox. Emails queued in it are written in
    the same transaction; after the commit the mail sender is woken."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        signal: OutboxSignal | None = None,
        mail_signal: OutboxSignal | None = None,
        public_url: str = "",
    ) -> None:
        super().__init__(db, clock=clock, signal=signal)
        self.mail_signal = mail_signal
        self.public_url = public_url  # where links in emails queued by consumers point
        self._mail_queued = False

    def open_stores(self, session: AsyncConnection) -> None:
        Stores.__init__(self, session)
        self._mail_queued = False

    async def queue_mail(self, recipient: str, subject: str, text: str, html: str | None) -> None:
        await self.mail.add(recipient, subject, text, html, self.clock.now())
        self._mail_queued = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        if exc_type is None and self._mail_queued and self.mail_signal is not None:
            self.mail_signal.notify()
        self._mail_queued = False


def unit_of_work(context: ServiceContext) -> UsersUnitOfWork:
    return UsersUnitOfWork(
        context.db,
        clock=context.clock,
        signal=context.signal,
        mail_signal=context.extras.get("mail_signal"),
        public_url=context.settings.effective_public_url,
    )


@asynccontextmanager
async def reading(db: Database) -> AsyncIterator[Stores]:
    """Stores on a read-only connection (Core, no ORM session): queries without taking SQLite's write turn."""
    async with db.read_connection() as connection:
        yield Stores(connection)


def is_unique_violation(error: Exception) -> bool:
    """Whether an IntegrityError comes from a unique constraint (SQLite and PostgreSQL word it differently)."""
    text = str(getattr(error, "orig", error)).lower()
    return "unique" in text or "duplicate key" in text
