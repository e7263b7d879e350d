"""Stores of the images service: the image records (locked for decisions, claimed for processing) and the unit
of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from gatherly.images.domain import Image, ImageId, Purpose, Status, UserId, Variant
from gatherly.images.tables import images
from gatherly.kernel.db import Database, Executor
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.uow import UnitOfWork


def _image(row: RowMapping) -> Image:
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
        row = (await self.session.execute(select(images).where(images.c.id == image_id))).mappings().first()
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


class Stores:
    """Every store of the service on one connection or session."""

    def __init__(self, session: Executor) -> None:
        self.images = ImageStore(session)


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
