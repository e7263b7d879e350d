"""The ready-image read model: which images the images service has finished (from image.ready / image.deleted).

Users keep ready avatars, groups ready banners, events (later) ready cover images: one table shape and one store,
each service with a table of its own in its own database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, MetaData, String, Table, bindparam, delete, insert, select, update
from typing_extensions import TypedDict

from gatherly.contracts.images import ImageReady
from gatherly.contracts.users import ImageVariants
from gatherly.kernel.db import Executor, rowcount
from gatherly.kernel.fixed_reads import FixedRead
from gatherly.kernel.tables import USER_ID, Json, UtcDateTime


def ready_images_table(metadata: MetaData, name: str, *, image_id_length: int = 36) -> Table:
    """A service's table of ready images; its migration creates the same columns."""
    return Table(
        name,
        metadata,
        Column("image_id", String(image_id_length), primary_key=True),
        Column("owner_id", USER_ID, nullable=False),
        Column("variants", Json, nullable=False),
        Column("ready_at", UtcDateTime(), nullable=False),
    )


@dataclass(frozen=True)
class ReadyImage:
    image_id: str
    owner_id: str
    variants: ImageVariants


class ImageVariantsJson(TypedDict):
    """An image's variants in a list page's JSON (the groups' banners, the events' covers): a dict, which orjson
    writes as the page's ImageVariants would be written."""

    thumb: str
    medium: str
    large: str


def variants_json(variants: ImageVariants | None) -> ImageVariantsJson | None:
    """`variants` as a list page's JSON carries them."""
    if variants is None:
        return None
    return {"thumb": variants.thumb, "medium": variants.medium, "large": variants.large}


_IMAGE_BY_ID: dict[Table, FixedRead] = {}


def _image_by_id(table: Table) -> FixedRead:
    """The lookup of one ready image, built once per table (stores are made per request)."""
    read = _IMAGE_BY_ID.get(table)
    if read is None:
        read = _IMAGE_BY_ID[table] = FixedRead(select(table).where(table.c.image_id == bindparam("image_id")))
    return read


class ReadyImageStore:
    """Upserted from image.ready (of the purpose the service shows), removed on image.deleted. A replayed
    image.ready writes the same row again, so replaying the topic from the beginning rebuilds the table."""

    def __init__(self, session: Executor, table: Table) -> None:
        self.session = session
        self.table = table
        self._by_id = _image_by_id(table)

    async def get(self, image_id: str | None) -> ReadyImage | None:
        if image_id is None:
            return None
        row = await self._by_id.first(self.session, {"image_id": image_id})
        return ReadyImage(row["image_id"], row["owner_id"], ImageVariants(**row["variants"])) if row else None

    async def put(self, image_id: str, owner_id: str, variants: ImageVariants, ready_at: datetime) -> None:
        values = {"owner_id": owner_id, "variants": variants.model_dump(), "ready_at": ready_at}
        result = await self.session.execute(
            update(self.table).where(self.table.c.image_id == image_id).values(**values)
        )
        if rowcount(result) == 0:
            await self.session.execute(insert(self.table).values(image_id=image_id, **values))

    async def keep(self, event: ImageReady) -> None:
        await self.put(event.image_id, event.owner_id, event.variants, event.ready_at)

    async def remove(self, image_id: str) -> None:
        await self.session.execute(delete(self.table).where(self.table.c.image_id == image_id))
