"""The upload flow through HTTP, on every database and storage backend: slot → direct upload → complete → ready
(variants re-encoded, metadata gone) → delete; the events it publishes; expiry of slots never completed."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from gatherly.images.service import wake_tidying
from gatherly.images.store import _image, reading
from gatherly.images.tables import images
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")

JPEG_GPS_EXIF = 0x8825
ORIENTATION = 0x0112


async def published(api: Any, image_id: str) -> list[Envelope]:
    await api.running.settle()
    records = await api.running.process.platform.log.read("image", limit=100_000)
    return [e for e in (Envelope.from_record(r) for r in records) if e.aggregate_id == image_id]


async def exists(api: Any, key: str) -> bool:
    storage = api.running.process.host("images").context.extras["storage"]
    return await storage.read(key, limit=50 * 1024 * 1024) is not None


async def gone(api: Any, key: str, why: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while await exists(api, key):
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.05)


async def test_an_uploaded_photo_becomes_ready_with_three_webp_variants_and_image_ready(
    api: Any, pictures: Any
) -> None:
    ann = await api.person()
    image = await api.upload(ann, pictures.jpeg((1200, 900)))
    assert image["status"] == "ready" and image["reason"] is None
    assert (image["width"], image["height"]) == (1200, 900)
    sizes = {}
    for variant, url in image["variants"].items():
        fetched = await api.fetch(url)
        assert fetched.status_code == 200, fetched.text
        with Image.open(io.BytesIO(fetched.content)) as decoded:
            assert decoded.format == "WEBP"
            sizes[variant] = decoded.size
    assert sizes == {"thumb": (160, 160), "medium": (640, 480), "large": (1200, 900)}  # never enlarged

    (ready,) = [e for e in await published(api, image["id"]) if e.type == "image.ready"]
    assert ready.payload["owner_id"] == ann.user_id and ready.payload["purpose"] == "event_photo"
    assert set(ready.payload["variants"]) == {"thumb", "medium", "large"}
    # The original is never served and is deleted once processed.
    await gone(api, f"uploads/{image['id']}", "the original upload was not deleted")


async def test_exif_orientation_is_applied_then_every_piece_of_metadata_is_gone(api: Any, pictures: Any) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: upright, the 400 x 300 picture is 300 x 400
    exif[0x010F] = "SecretCam"  # Make
    exif.get_ifd(JPEG_GPS_EXIF).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    original = pictures.jpeg((400, 300), exif=exif)
    assert b"SecretCam" in original

    image = await api.upload(await api.person(), original)
    assert (image["width"], image["height"]) == (300, 400)
    for url in image["variants"].values():
        data = (await api.fetch(url)).content
        assert b"Exif" not in data and b"SecretCam" not in data and b"XMP" not in data and b"ICCP" not in data
        with Image.open(io.BytesIO(data)) as decoded:
            assert not decoded.getexif() and "exif" not in decoded.info and "icc_profile" not in decoded.info
    with Image.open(io.BytesIO((await api.fetch(image["variants"]["large"])).content)) as large:
        assert large.size == (300, 400)


@pytest.mark.parametrize(("kind", "content_type"), [("png", "image/png"), ("webp", "image/webp"), ("gif", "image/gif")])
async def test_png_webp_and_static_gif_are_accepted(api: Any, pictures: Any, kind: str, content_type: str) -> None:
    image = await api.upload(await api.person(), getattr(pictures, kind)(), content_type)
    assert image["status"] == "ready", image["reason"]


async def test_the_owner_deletes_an_image_its_objects_go_and_image_deleted_is_published(
    api: Any, pictures: Any
) -> None:
    ann = await api.person()
    image = await api.upload(ann, pictures.jpeg())
    response = await api.client.delete(f"/api/images/{image['id']}", headers=ann.auth)
    assert response.status_code == 204
    assert (await api.client.get(f"/api/images/{image['id']}", headers=ann.auth)).status_code == 404
    assert (await api.client.delete(f"/api/images/{image['id']}", headers=ann.auth)).status_code == 404
    types = [e.type for e in await published(api, image["id"])]
    assert types == ["image.ready", "image.deleted"]
    await gone(api, f"images/{image['id']}/thumb.webp", "the variants of a deleted image were not deleted")


async def test_a_slot_states_what_it_accepts_and_complete_is_once_only(api: Any, pictures: Any) -> None:
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data, purpose="avatar")
    upload = slot["upload"]
    if api.storage == "local":
        assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": "image/jpeg"}
    else:
        assert upload["method"] == "POST" and upload["fields"]["Content-Type"] == "image/jpeg"
    pending = await api.client.get(f"/api/images/{slot['image_id']}", headers=ann.auth)
    assert pending.json()["status"] == "pending" and pending.json()["variants"] is None
    assert (await api.send(upload, data)).status_code in (200, 201, 204)
    first = await api.complete(ann, slot["image_id"])
    assert first.status_code == 202 and first.json()["status"] == "pending"
    second = await api.complete(ann, slot["image_id"])
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert (await api.outcome(ann, slot["image_id"]))["status"] == "ready"


async def test_requests_without_a_token_are_refused(api: Any) -> None:
    body = {"purpose": "avatar", "content_type": "image/png", "size_bytes": 10}
    assert (await api.client.post("/api/images/uploads", json=body)).status_code == 401
    assert (await api.client.get("/api/images/00000000-0000-0000-0000-000000000000")).status_code == 401


async def test_a_deleted_accounts_images_are_deleted_with_it(api: Any, pictures: Any) -> None:
    ann = await api.person()
    ready = await api.upload(ann, pictures.jpeg())
    pending = await api.slot(ann, pictures.jpeg())
    assert (await api.client.delete("/api/users/me", headers=ann.auth)).status_code == 202
    await api.running.settle()
    for image_id in (ready["id"], pending["image_id"]):
        assert "image.deleted" in [e.type for e in await published(api, image_id)]
    await gone(api, f"images/{ready['id']}/large.webp", "the variants of a deleted account's image were not deleted")


async def test_a_person_holds_a_bounded_number_of_open_uploads_and_deleting_one_frees_a_slot(
    api: Any, pictures: Any
) -> None:
    limit = api.running.settings.image_open_uploads_per_person
    hoarder, other = await api.person(), await api.person()
    data = pictures.jpeg((64, 64))
    slots = [await api.slot(hoarder, data) for _ in range(limit)]
    body = {"purpose": "event_photo", "content_type": "image/jpeg", "size_bytes": len(data)}
    refused = await api.client.post("/api/images/uploads", json=body, headers=hoarder.auth)
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
    assert "unfinished uploads" in refused.json()["detail"]
    # The cap is per person, and a slot given up makes room again.
    await api.slot(other, data)
    assert (await api.client.delete(f"/api/images/{slots[0]['image_id']}", headers=hoarder.auth)).status_code == 204
    await api.slot(hoarder, data)


async def test_an_upload_never_completed_expires_and_its_object_is_deleted(api: Any, pictures: Any) -> None:
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    assert (await api.send(slot["upload"], data)).status_code in (200, 201, 204)
    original = f"uploads/{slot['image_id']}"
    assert await exists(api, original)
    context = api.running.process.host("images").context
    platform = api.running.process.platform
    real = platform.clock
    platform.clock = FrozenClock(real.now() + timedelta(seconds=api.running.settings.image_upload_ttl_seconds + 1))
    try:
        wake_tidying(context)
        image = await api.outcome(ann, slot["image_id"], timeout=30)
        assert image["status"] == "rejected" and "not completed before its slot expired" in image["reason"]
        await gone(api, original, "the object of an upload never completed was not deleted when its slot expired")
    finally:
        platform.clock = real
    (rejected,) = [e for e in await published(api, slot["image_id"]) if e.type == "image.rejected"]
    assert "expired" in rejected.payload["reason"]


async def test_an_image_read_on_the_driver_is_the_image_sqlalchemy_reads(api: Any, pictures: Any) -> None:
    """`GET /api/images/{id}` reads its image with a FixedRead (store.IMAGE_BY_ID): the same Image as the statement
    run through SQLAlchemy, for a ready image (variants, sizes, times) and a slot (its empty columns)."""
    ann = await api.person()
    ready = await api.upload(ann, pictures.jpeg())
    slot = await api.slot(ann, pictures.jpeg())
    db = api.running.process.host("images").context.db

    async def through_sqlalchemy(image_id: str) -> Any:
        async with db.read_connection() as connection:
            row = (await connection.execute(select(images).where(images.c.id == image_id))).mappings().first()
        return _image(row) if row else None

    for image_id in (ready["id"], slot["image_id"]):
        for _ in range(100):  # the tidy task may change the image meanwhile (its original deleted): read it at rest
            before = await through_sqlalchemy(image_id)
            async with reading(db) as stores:
                fixed = await stores.images.get(image_id)
            if await through_sqlalchemy(image_id) == before:
                break
        assert fixed is not None and fixed == before, image_id
        # `==` takes any zone's time for the instant; the answer writes the times as they come: in UTC.
        times = [value for value in vars(fixed).values() if isinstance(value, datetime)]
        assert times and all(time.utcoffset() == timedelta(0) for time in times), image_id
    async with reading(db) as stores:
        assert await stores.images.get("0b0f3c52-8a3e-4c52-9d8e-000000000000") is None
