"""Stores of the images service: the image records (locked for decisions, claimed for processing) and the unit
of work."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.contracts.users import EXPORT_PARTS
from gatherly.images.domain import ExportJob, ExportStatus, Image, ImageId, Purpose, Status, UserId, Variant
from gatherly.images.tables import export_parts, exports, images
from gatherly.kernel.db import Database, Executor, insert_ignoring_conflicts, rowcount
from gatherly.kernel.fixed_reads import FixedRead
from gatherly.kernel.revocation import RevocationStore
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import UnitOfWork

# An image by id (`GET /api/images/{id}`), compiled once and run on the driver (FixedRead): built and run per call
# through SQLAlchemy it was about a third of the request.
IMAGE_BY_ID = FixedRead(select(images).where(images.c.id == bindparam("image_id")))


def _image(row: Mapping[Any, Any]) -> Image:
    return Image(
        id=ImageId(row["id"]),
        owner_id=UserId(row["owner_id"]),
        purpose=Purpose(row["purpose"]),
        content_type=row["content_type"],
        size_bytes=row["size_bytes"],
        status=Status(row["status"]),
        created_at=row["created_at"],
        upload_expires_at=row["upload_expires_at"],
        reason=row["reason"],
        variants={Variant(name): key for name, key in row["variants"].items()},
        width=row["width"],
        height=row["height"],
        attempts=row["attempts"],
        claimed_until=row["claimed_until"],
        finished_at=row["finished_at"],
        garbage=tuple(row["garbage"]),
        original_sweep_at=row["original_sweep_at"],
        garbage_retry_at=row["garbage_retry_at"],
    )


def _columns(image: Image) -> dict[str, Any]:
    return {
        "owner_id": image.owner_id,
        "purpose": image.purpose.value,
        "content_type": image.content_type,
        "size_bytes": image.size_bytes,
        "status": image.status.value,
        "reason": image.reason,
        "variants": {variant.value: key for variant, key in image.variants.items()},
        "width": image.width,
        "height": image.height,
        "attempts": image.attempts,
        "claimed_until": image.claimed_until,
        "created_at": image.created_at,
        "upload_expires_at": image.upload_expires_at,
        "finished_at": image.finished_at,
        "garbage": list(image.garbage),
        "has_garbage": bool(image.garbage),
        "original_sweep_at": image.original_sweep_at,
        "garbage_retry_at": image.garbage_retry_at,
    }


class ImageStore:
    def __init__(self, session: Executor) -> None:
        self.session = session

    async def add(self, image: Image) -> None:
        await self.session.execute(insert(images).values(id=image.id, **_columns(image)))

    async def save(self, image: Image) -> None:
        await self.session.execute(update(images).where(images.c.id == image.id).values(**_columns(image)))

    async def get(self, image_id: str) -> Image | None:
        row = await IMAGE_BY_ID.first(self.session, {"image_id": image_id})
        return _image(row) if row else None

    async def get_for_update(self, image_id: str) -> Image | None:
        # Locked: completing, processing and deleting the same image decide on its status one at a time.
        query = select(images).where(images.c.id == image_id).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return _image(row) if row else None

    async def owned_by(self, owner: str) -> list[Image]:
        """Every image of `owner` that is not deleted, locked."""
        query = (
            select(images).where(images.c.owner_id == owner, images.c.status != Status.DELETED.value).with_for_update()
        )
        return [_image(row) for row in (await self.session.execute(query)).mappings()]

    async def ready_of(self, owner: str) -> list[Image]:
        """Every ready image of `owner`, oldest first (not locked: for reading their variants)."""
        query = (
            select(images)
            .where(images.c.owner_id == owner, images.c.status == Status.READY.value)
            .order_by(images.c.created_at, images.c.id)
        )
        return [_image(row) for row in (await self.session.execute(query)).mappings()]

    async def count_open(self, owner: str, now: datetime) -> int:
        """Images of `owner` still in flight: slots not yet expired, and uploads being processed."""
        query = select(func.count()).where(
            images.c.owner_id == owner,
            or_(
                and_(images.c.status == Status.AWAITING_UPLOAD.value, images.c.upload_expires_at > now),
                images.c.status == Status.PROCESSING.value,
            ),
        )
        return int(await self.session.scalar(query) or 0)

    async def next_to_process(self, now: datetime) -> Image | None:
        """The oldest completed upload that no live attempt holds, locked (others skip it on PostgreSQL)."""
        query = (
            select(images)
            .where(
                images.c.status == Status.PROCESSING.value,
                or_(images.c.claimed_until.is_(None), images.c.claimed_until <= now),
            )
            .order_by(images.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = (await self.session.execute(query)).mappings().first()
        return _image(row) if row else None

    async def overdue_uploads(self, now: datetime, limit: int) -> list[Image]:
        query = (
            select(images)
            .where(and_(images.c.status == Status.AWAITING_UPLOAD.value, images.c.upload_expires_at <= now))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_image(row) for row in (await self.session.execute(query)).mappings()]

    async def originals_to_sweep(self, now: datetime, limit: int) -> list[Image]:
        query = (
            select(images)
            .where(images.c.original_sweep_at <= now)
            .order_by(images.c.original_sweep_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_image(row) for row in (await self.session.execute(query)).mappings()]

    async def with_garbage(self, now: datetime, limit: int) -> list[Image]:
        due = or_(images.c.garbage_retry_at.is_(None), images.c.garbage_retry_at <= now)
        query = select(images).where(images.c.has_garbage.is_(True), due).limit(limit).with_for_update(skip_locked=True)
        return [_image(row) for row in (await self.session.execute(query)).mappings()]


class ExportStore:
    """Data exports being assembled: the request and the parts as they arrive, then the archive."""

    def __init__(self, session: AsyncConnection) -> None:
        self.session = session

    # Requests and parts are inserted ignoring conflicts: a redelivered one is recorded once.
    async def _ensure(self, export_id: str, user_id: str, now: datetime) -> None:
        await self.session.execute(
            insert_ignoring_conflicts(self.session, exports).values(
                id=export_id, user_id=user_id, status=ExportStatus.COLLECTING.value, created_at=now
            )
        )

    async def note_request(self, export_id: str, user_id: str, now: datetime) -> None:
        await self._ensure(export_id, user_id, now)
        await self.session.execute(
            update(exports)
            .where(exports.c.id == export_id, exports.c.user_id == user_id, exports.c.requested_at.is_(None))
            .values(requested_at=now)
        )

    async def add_part(self, export_id: str, user_id: str, service: str, files: dict[str, Any], now: datetime) -> None:
        await self._ensure(export_id, user_id, now)
        await self.session.execute(
            insert_ignoring_conflicts(self.session, export_parts).values(
                export_id=export_id, service=service, user_id=user_id, files=files, received_at=now
            )
        )

    async def next_to_assemble(self, now: datetime) -> ExportJob | None:
        """An export whose request and every part (of its own person) are in, that no live claim holds, locked."""
        parts_in = (
            select(func.count())
            .where(
                export_parts.c.export_id == exports.c.id,
                export_parts.c.user_id == exports.c.user_id,
                export_parts.c.service.in_(EXPORT_PARTS),
            )
            .scalar_subquery()
        )
        query = (
            select(exports.c.id, exports.c.user_id)
            .where(
                exports.c.status == ExportStatus.COLLECTING.value,
                exports.c.requested_at.is_not(None),
                or_(exports.c.claimed_until.is_(None), exports.c.claimed_until <= now),
                parts_in == len(EXPORT_PARTS),
            )
            .order_by(exports.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = (await self.session.execute(query)).mappings().first()
        return ExportJob(row["id"], UserId(row["user_id"])) if row else None

    async def claim(self, export_id: str, until: datetime) -> None:
        await self.session.execute(update(exports).where(exports.c.id == export_id).values(claimed_until=until))

    async def parts_of(self, job: ExportJob) -> dict[str, dict[str, Any]]:
        """Each service's files, by service (only parts of the export's own person)."""
        query = select(export_parts.c.service, export_parts.c.files).where(
            export_parts.c.export_id == job.id, export_parts.c.user_id == job.user_id
        )
        return {row["service"]: row["files"] for row in (await self.session.execute(query)).mappings()}

    async def finish(self, export_id: str, archive_key: str, size_bytes: int, expires_at: datetime) -> bool:
        """The archive is written: the parts go (the archive holds them); False when it was finished already."""
        result = await self.session.execute(
            update(exports)
            .where(exports.c.id == export_id, exports.c.status == ExportStatus.COLLECTING.value)
            .values(
                status=ExportStatus.READY.value,
                archive_key=archive_key,
                size_bytes=size_bytes,
                expires_at=expires_at,
                claimed_until=None,
            )
        )
        await self.session.execute(delete(export_parts).where(export_parts.c.export_id == export_id))
        return rowcount(result) == 1

    async def note_abandoned_archive(self, export_id: str, archive_key: str) -> None:
        """An archive was written for an export abandoned meanwhile (its person was deleted): listed, so that the
        tidy task deletes it (`expired_archives`)."""
        await self.session.execute(
            update(exports)
            .where(exports.c.id == export_id, exports.c.status == ExportStatus.ABANDONED.value)
            .values(archive_key=archive_key)
        )

    async def expired_archives(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(export id, archive key) of archives past their expiry or written for an abandoned export, locked."""
        expired = and_(exports.c.status == ExportStatus.READY.value, exports.c.expires_at <= now)
        abandoned = and_(exports.c.status == ExportStatus.ABANDONED.value, exports.c.archive_key.is_not(None))
        query = (
            select(exports.c.id, exports.c.archive_key)
            .where(or_(expired, abandoned))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [(row["id"], row["archive_key"]) for row in (await self.session.execute(query)).mappings()]

    async def mark_expired(self, export_ids: Sequence[str]) -> None:
        if export_ids:
            await self.session.execute(
                update(exports).where(exports.c.id.in_(export_ids)).values(status=ExportStatus.EXPIRED.value)
            )

    async def status_of(self, export_id: str, *, locked: bool = False) -> ExportStatus | None:
        """`locked`: the row stays locked until the transaction ends, so a deletion (`forget_person`) waits for a
        part being kept, or the part's transaction reads the deletion's outcome."""
        query = select(exports.c.status).where(exports.c.id == export_id)
        if locked:
            query = query.with_for_update()
        status = (await self.session.execute(query)).scalar()
        return ExportStatus(status) if status is not None else None

    async def forget_person(self, user_id: str, now: datetime) -> None:
        """The person's account is deleted: the parts kept for their archives go, exports still collecting are
        abandoned (no archive is written), and archives written are due now (the tidy task deletes them).
        The exports are changed before the parts are deleted: their row locks make this wait for a part being kept
        at the same moment (`keep_export_part` locks its export), whose part the delete then sees."""
        await self.session.execute(
            update(exports)
            .where(exports.c.user_id == user_id, exports.c.status == ExportStatus.COLLECTING.value)
            .values(status=ExportStatus.ABANDONED.value)
        )
        await self.session.execute(
            update(exports)
            .where(exports.c.user_id == user_id, exports.c.status == ExportStatus.READY.value)
            .values(expires_at=now)
        )
        await self.session.execute(delete(export_parts).where(export_parts.c.user_id == user_id))

    async def abandon_stale(self, created_before: datetime) -> int:
        """Exports still collecting since before the cutoff: their parts are dropped (personal data not kept for
        an archive that will never be made); returns how many."""
        stale = select(exports.c.id).where(
            exports.c.status == ExportStatus.COLLECTING.value, exports.c.created_at <= created_before
        )
        ids = list((await self.session.execute(stale)).scalars())
        if ids:
            await self.session.execute(delete(export_parts).where(export_parts.c.export_id.in_(ids)))
            await self.session.execute(
                update(exports).where(exports.c.id.in_(ids)).values(status=ExportStatus.ABANDONED.value)
            )
        return len(ids)


class Stores:
    """Every store of the service on one connection."""

    def __init__(self, session: AsyncConnection) -> None:
        self.images = ImageStore(session)
        self.exports = ExportStore(session)
        self.revocations = RevocationStore(session)  # the kernel's table: accounts deleted (or locked)


class ImagesUnitOfWork(UnitOfWork, Stores):
    """One transaction of the images service: its stores plus the outbox."""

    def open_stores(self, session: AsyncConnection) -> None:
        Stores.__init__(self, session)


def unit_of_work(context: ServiceContext) -> ImagesUnitOfWork:
    return ImagesUnitOfWork(context.db, clock=context.clock, signal=context.signal)


@asynccontextmanager
async def reading(db: Database) -> AsyncIterator[Stores]:
    """Stores on a read-only connection: queries that do not wait for SQLite's write turn."""
    async with db.read_connection() as connection:
        yield Stores(connection)
