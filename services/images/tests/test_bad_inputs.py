"""The bad-input corpus, made in the test: each file or request is refused with a reason through the HTTP API, and the
service stays healthy (ready, and still processing good pictures) afterwards."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from gatherly.images.service import STORAGE, wake_tidying
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def rejected(api: Any, data: bytes, content_type: str = "image/jpeg") -> str:
    image = await api.upload(await api.person(), data, content_type)
    assert image["status"] == "rejected", image
    assert image["variants"] is None
    reason: str = image["reason"]
    return reason


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("text posing as a PNG", "image/png", "not a JPEG, PNG, WebP or GIF"),
        ("JPEG declared as PNG", "image/png", "is a JPEG image, but image/png was declared"),
        ("truncated JPEG", "image/jpeg", "does not end where a JPEG image ends"),
        ("PNG with a broken image stream", "image/png", "truncated or corrupt"),
        ("decompression bomb (100 MP of zeros in a few KB)", "image/png", "decompression bomb"),
        (
            "bomb just above the pixel bound",
            "image/png",
            "(a decompression bomb): Image size (42000000 pixels) exceeds limit of 40000000",
        ),
        ("huge dimensions", "image/png", "no side may exceed"),
        ("animated GIF", "image/gif", "animated"),
        ("animated WebP", "image/webp", "animated"),
        ("JPEG with a ZIP appended (polyglot)", "image/jpeg", "does not end where a JPEG image ends"),
        ("GIF carrying a script (polyglot)", "image/gif", "markup or script"),
    ],
)
async def test_each_bad_file_is_rejected_with_its_reason(
    api: Any, pictures: Any, name: str, content_type: str, expected: str
) -> None:
    files = {
        "text posing as a PNG": lambda: b"Hello, I am plain text and not a picture at all.\n" * 3,
        "JPEG declared as PNG": lambda: pictures.jpeg(),
        "truncated JPEG": lambda: pictures.jpeg((600, 400))[:3000],
        "PNG with a broken image stream": lambda: _break_idat(pictures.png((200, 200), "RGB")),
        "decompression bomb (100 MP of zeros in a few KB)": lambda: pictures.png_claiming(10_000, 10_000),
        "bomb just above the pixel bound": lambda: pictures.png_claiming(7_000, 6_000),
        "huge dimensions": lambda: pictures.png_claiming(20_000, 1),
        "animated GIF": lambda: pictures.animated("GIF"),
        "animated WebP": lambda: pictures.animated("WEBP"),
        "JPEG with a ZIP appended (polyglot)": lambda: pictures.with_zip_appended(pictures.jpeg()),
        "GIF carrying a script (polyglot)": lambda: pictures.gif_with_script(),
    }
    data = files[name]()
    assert len(data) < 1024 * 1024, "the corpus stays small: bombs are small files"
    assert expected in await rejected(api, data, content_type)


def _break_idat(png: bytes) -> bytes:
    start = png.index(b"IDAT") + 4
    return png[:start] + bytes(b ^ 0x5A for b in png[start : start + 40]) + png[start + 40 :]


async def test_a_rejection_is_published_with_its_reason(api: Any) -> None:
    ann = await api.person()
    data = b"not an image"
    slot = await api.slot(ann, data, "image/png")
    await api.send(slot["upload"], data)
    await api.complete(ann, slot["image_id"])
    await api.outcome(ann, slot["image_id"])
    await api.running.settle()
    records = await api.running.process.platform.log.read("image", limit=100_000)
    (event,) = [e for e in map(Envelope.from_record, records) if e.aggregate_id == slot["image_id"]]
    assert event.type == "image.rejected"
    assert event.payload["owner_id"] == ann.user_id and "not a JPEG" in event.payload["reason"]


# --- refused before any file arrives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": 0}, "size_bytes"),
        ({"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": -5}, "size_bytes"),
        ({"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": 6 * 1024 * 1024}, "size_bytes"),
        ({"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": 10**40}, "size_bytes"),
        ({"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": "12"}, "size_bytes"),
        ({"purpose": "avatar", "content_type": "image/svg+xml", "size_bytes": 100}, "content_type"),
        ({"purpose": "avatar", "content_type": "text/html", "size_bytes": 100}, "content_type"),
        ({"purpose": "wallpaper", "content_type": "image/png", "size_bytes": 100}, "purpose"),
        ({"purpose": "avatar", "content_type": "image/png\u0000", "size_bytes": 100}, "content_type"),
        ({"purpose": "avatar", "content_type": "image/png\ud800", "size_bytes": 100}, None),
    ],
)
async def test_a_slot_that_breaks_the_rules_is_refused_naming_the_field(
    api: Any, body: dict[str, Any], field: str | None
) -> None:
    ann = await api.person("slot-asker")
    # As escaped JSON text: a lone surrogate cannot be encoded as UTF-8, but JSON can carry it as \ud800.
    headers = {**ann.auth, "Content-Type": "application/json"}
    response = await api.client.post("/api/images/uploads", content=json.dumps(body), headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert field in response.text


async def test_an_event_photo_may_be_larger_than_an_avatar(api: Any) -> None:
    ann = await api.person("slot-asker")
    size = 12 * 1024 * 1024
    body = {"content_type": "image/jpeg", "size_bytes": size}
    avatar = await api.client.post("/api/images/uploads", json={**body, "purpose": "avatar"}, headers=ann.auth)
    assert avatar.status_code == 422
    photo = await api.client.post("/api/images/uploads", json={**body, "purpose": "event_photo"}, headers=ann.auth)
    assert photo.status_code == 201


async def test_a_slot_for_someone_else_is_refused(api: Any) -> None:
    ann, bob = await api.person(), await api.person()
    body = {"purpose": "avatar", "content_type": "image/png", "size_bytes": 100, "owner_id": bob.user_id}
    response = await api.client.post("/api/images/uploads", json=body, headers=ann.auth)
    assert response.status_code == 403 and "owner_id" in response.json()["detail"]


# --- refused by storage when the file arrives ------------------------------------------------------------------------


async def test_storage_refuses_a_file_larger_or_smaller_than_the_slot_or_empty(api: Any, pictures: Any) -> None:
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    for wrong in (data + b"\0" * 100, data[:-100], b""):
        answer = await api.send(slot["upload"], wrong)
        assert 400 <= answer.status_code < 500, (len(wrong), answer.status_code, answer.text)
    # Nothing arrived: completing is still allowed, and the image is rejected with the reason.
    assert (await api.complete(ann, slot["image_id"])).status_code == 202
    assert (await api.outcome(ann, slot["image_id"]))["reason"] == "no file was uploaded"


async def test_storage_refuses_another_content_type_than_the_slot_named(api: Any, pictures: Any) -> None:
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    answer = await api.send(slot["upload"], data, content_type="text/html")
    assert answer.status_code == 403 if api.storage == "local" else 400 <= answer.status_code < 500


async def test_a_file_of_another_size_than_declared_is_rejected_when_storage_let_it_through(
    api: Any, pictures: Any
) -> None:
    """A storage that does not enforce the slot's size (a misconfigured bucket) is caught by the processing."""
    ann = await api.person()
    declared = pictures.jpeg((300, 300))
    slot = await api.slot(ann, declared)
    storage = api.running.process.host("images").context.extras["storage"]
    await storage.write(f"uploads/{slot['image_id']}", declared[:-10], content_type="image/jpeg")
    await api.complete(ann, slot["image_id"])
    reason = (await api.outcome(ann, slot["image_id"]))["reason"]
    assert reason == f"{len(declared) - 10} bytes were uploaded, {len(declared)} were declared"

    bigger = await api.slot(ann, declared)
    await storage.write(f"uploads/{bigger['image_id']}", declared + b"\0\0", content_type="image/jpeg")
    await api.complete(ann, bigger["image_id"])
    assert "more bytes were uploaded" in (await api.outcome(ann, bigger["image_id"]))["reason"]


async def test_a_body_over_every_limit_is_refused(api: Any) -> None:
    ann = await api.person()
    slot = await api.slot(ann, b"x" * 100)
    response = await api.send(slot["upload"], b"\0" * (21 * 1024 * 1024))
    # Local storage: the boundary's limit for /media refuses it before reading it all; S3: the policy's length range.
    assert response.status_code == 413 if api.storage == "local" else 400 <= response.status_code < 500


# --- signed URLs ----------------------------------------------------------------------------------------------------


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_tampered_upload_url_is_refused(api: Any, pictures: Any) -> None:
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    upload = slot["upload"]
    if upload["method"] == "PUT":
        for tampered in (
            _with_query(upload["url"], size=str(len(data) * 10)),
            _with_query(upload["url"], expires=str(int(upload["url"].split("expires=")[1].split("&")[0]) + 3600)),
            _with_query(upload["url"], signature="A" * 43),
            upload["url"].replace(slot["image_id"], "00000000-0000-0000-0000-000000000000"),
        ):
            response = await api.send({**upload, "url": tampered}, data)
            assert response.status_code == 403, tampered
    else:
        fields = dict(upload["fields"])
        for name in ("policy", "x-amz-signature"):
            broken = {**upload, "fields": {**fields, name: fields[name][:-4] + "AAAA"}}
            assert (await api.send(broken, data)).status_code == 403
        other_key = {**upload, "fields": {**fields, "key": "uploads/00000000-0000-0000-0000-000000000000"}}
        assert (await api.send(other_key, data)).status_code == 403


async def test_an_expired_slot_cannot_be_completed_and_is_rejected_by_the_sweep(api: Any, pictures: Any) -> None:
    """Local upload URLs expire by the service's clock (frozen here); S3 checks against its own clock, which the
    storage conformance suite covers."""
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    platform = api.running.process.platform
    real = platform.clock
    frozen = FrozenClock(real.now() + timedelta(seconds=api.running.settings.image_upload_ttl_seconds + 1))
    platform.clock = frozen
    try:
        if api.storage == "local":
            assert (await api.send(slot["upload"], data)).status_code == 403
        assert (await api.complete(ann, slot["image_id"])).status_code == 409
        image = await api.outcome(ann, slot["image_id"], timeout=30)
        assert image["status"] == "rejected" and "expired" in image["reason"]
    finally:
        platform.clock = real


async def test_a_tampered_or_expired_download_url_is_refused(api: Any, pictures: Any) -> None:
    image = await api.upload(await api.person(), pictures.jpeg())
    url = image["variants"]["thumb"]
    assert (await api.fetch(url)).status_code == 200
    tampered = url.replace("thumb.webp", "large.webp")
    assert (await api.fetch(tampered)).status_code == 403
    if api.storage == "local":
        assert (await api.fetch(_with_query(url, expires="1"))).status_code == 403
        # The original upload is never served, even by a correctly signed-looking URL.
        original = url.replace(f"images/{image['id']}/thumb.webp", f"uploads/{image['id']}")
        assert (await api.fetch(original)).status_code == 403


# --- other people's images -------------------------------------------------------------------------------------------


async def test_another_users_image_id_is_not_found_for_every_call(api: Any, pictures: Any) -> None:
    ann, bob = await api.person(), await api.person()
    image = await api.upload(ann, pictures.jpeg())
    pending = await api.slot(ann, pictures.jpeg())
    for image_id in (image["id"], pending["image_id"]):
        assert (await api.client.get(f"/api/images/{image_id}", headers=bob.auth)).status_code == 404
        assert (await api.client.delete(f"/api/images/{image_id}", headers=bob.auth)).status_code == 404
        assert (await api.complete(bob, image_id)).status_code == 404
    assert (await api.client.get(f"/api/images/{image['id']}", headers=ann.auth)).json()["status"] == "ready"
    for hostile in ("x" * 5000, "..%2F..%2Fusers.db", "%00", "' OR 1=1 --"):
        response = await api.client.get(f"/api/images/{hostile}", headers=bob.auth)
        assert response.status_code in (404, 414, 422), response.text


# --- and after all of it --------------------------------------------------------------------------------------------


async def test_the_service_is_healthy_after_the_corpus(api: Any, pictures: Any) -> None:
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    image = await api.upload(await api.person(), pictures.png(), "image/png")
    assert image["status"] == "ready", image["reason"]
    await asyncio.wait_for(api.running.settle(), 30)


async def test_a_replayed_upload_after_processing_is_deleted_once_its_url_expires(api: Any, pictures: Any) -> None:
    """An upload URL works until its slot expires, also after the image was processed and its original deleted:
    what a replay leaves is deleted after the URL has expired, not kept for ever."""
    context = api.running.process.host("images").context
    storage = context.extras[STORAGE]
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    assert (await api.send(slot["upload"], data)).status_code in (200, 201, 204)
    assert (await api.complete(ann, slot["image_id"])).status_code == 202
    assert (await api.outcome(ann, slot["image_id"]))["status"] == "ready"
    original = f"uploads/{slot['image_id']}"
    await _until(lambda: _missing(storage, original), "the original was never deleted after processing")
    assert (await api.send(slot["upload"], data)).status_code in (200, 201, 204)  # the replay
    assert await storage.read(original, limit=len(data)) == data
    platform = api.running.process.platform
    real = platform.clock
    platform.clock = FrozenClock(real.now() + timedelta(seconds=api.running.settings.image_upload_ttl_seconds + 120))
    try:
        wake_tidying(context)
        await _until(lambda: _missing(storage, original), "the replayed original was never deleted")
    finally:
        platform.clock = real


async def _missing(storage: Any, key: str) -> bool:
    return await storage.read(key, limit=10**8) is None


async def _until(condition: Callable[[], Awaitable[bool]], failure: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.1)
