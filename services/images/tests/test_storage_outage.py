"""When storage fails while an upload is processed, the image waits and is tried again (never rejected for it, never
lost), and objects that could not be deleted stay listed until they are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from gatherly.images import service
from gatherly.images.domain import MAX_ATTEMPTS, Status, Variant, variant_key
from gatherly.images.service import STORAGE, wake_processing
from gatherly.images.storage import ObjectStorage, StorageUnavailable
from gatherly.images.store import unit_of_work
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Outage:
    """The real storage, except that its next `failures` reads and deletes fail as an unreachable storage does."""

    def __init__(self, real: ObjectStorage, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable("storage is down (injected)")

    async def read(self, key: str, *, limit: int) -> bytes | None:
        self._maybe_fail()
        return await self.real.read(key, limit=limit)

    async def delete(self, keys: Sequence[str]) -> dict[str, str]:
        self._maybe_fail()
        return await self.real.delete(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_an_upload_processed_while_storage_is_down_is_retried_until_ready(api: Any, pictures: Any) -> None:
    context = api.running.process.host("images").context
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    assert (await api.send(slot["upload"], data)).status_code in (200, 201, 204)
    real = context.extras[STORAGE]
    outage = context.extras[STORAGE] = Outage(real, failures=2)
    try:
        assert (await api.complete(ann, slot["image_id"])).status_code == 202
        image = await api.outcome(ann, slot["image_id"], timeout=60)
    finally:
        context.extras[STORAGE] = real
    assert outage.failures == 0 and outage.calls >= 3
    assert image["status"] == "ready", image
    await api.running.settle()
    records = await api.running.process.platform.log.read("image", limit=100_000)
    types = [e.type for e in map(Envelope.from_record, records) if e.aggregate_id == slot["image_id"]]
    assert types == ["image.ready"]


async def test_objects_that_could_not_be_deleted_are_deleted_later(api: Any, pictures: Any) -> None:
    context = api.running.process.host("images").context
    ann = await api.person()
    image = await api.upload(ann, pictures.jpeg())
    real = context.extras[STORAGE]
    context.extras[STORAGE] = Outage(real, failures=1)
    try:
        assert (await api.client.delete(f"/api/images/{image['id']}", headers=ann.auth)).status_code == 204
        key = f"images/{image['id']}/thumb.webp"
        deadline = time.monotonic() + 30
        while await real.read(key, limit=10**8) is not None:
            assert time.monotonic() < deadline, "the objects were never deleted after the outage"
            await asyncio.sleep(0.1)
    finally:
        context.extras[STORAGE] = real


class Refusing:
    """The real storage, except that it refuses to delete the objects of one image, as S3 does for one object
    under a legal hold or a deny policy."""

    def __init__(self, real: ObjectStorage, image_id: str) -> None:
        self.real = real
        self.image_id = image_id
        self.asked: list[str] = []

    async def delete(self, keys: Sequence[str]) -> dict[str, str]:
        self.asked += keys
        refused = {key: "AccessDenied: on hold" for key in keys if self.image_id in key}
        await self.real.delete([key for key in keys if key not in refused])
        return refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def _set_aside(context: Any, image_id: str) -> bool:
    async with (uow := unit_of_work(context)):
        image = await uow.images.get_for_update(image_id)
    return image is not None and image.garbage_retry_at is not None


async def test_an_object_storage_refuses_to_delete_waits_aside_and_never_holds_up_the_others(
    api: Any, pictures: Any
) -> None:
    context = api.running.process.host("images").context
    ann = await api.person()
    held, other = await api.upload(ann, pictures.jpeg()), await api.upload(ann, pictures.jpeg())
    real = context.extras[STORAGE]
    refusing = context.extras[STORAGE] = Refusing(real, held["id"])
    try:
        for image in (held, other):
            assert (await api.client.delete(f"/api/images/{image['id']}", headers=ann.auth)).status_code == 204
        other_thumb = f"images/{other['id']}/thumb.webp"
        deadline = time.monotonic() + 30
        while await real.read(other_thumb, limit=10**8) is not None:
            assert time.monotonic() < deadline, "the other image's objects were held up by the refused one"
            await asyncio.sleep(0.1)
        # The round that deleted those records the refusal after storage answered: wait for it (it may lag the
        # deletion it saw, on a loaded machine by seconds).
        while not await _set_aside(context, held["id"]):
            assert time.monotonic() < deadline, "the refused image's objects were never set aside"
            await asyncio.sleep(0.1)

        async with (uow := unit_of_work(context)):
            aside = await uow.images.get_for_update(held["id"])
            assert aside is not None and aside.garbage and aside.garbage_retry_at is not None
            assert aside.garbage_retry_at > uow.clock.now()
            # Not asked again before its time: the next rounds do not find it due. (Only it: the module's service is
            # shared, and other images' garbage, this test's other image's too, may be due or being collected.)
            due = await uow.images.with_garbage(uow.clock.now(), 100_000)
            assert held["id"] not in [image.id for image in due]
            await uow.images.save(replace(aside, garbage_retry_at=uow.clock.now() - timedelta(seconds=1)))
        refusing.image_id = "nothing any more"  # the hold was lifted
        asked_before = len(refusing.asked)
        collected = await service.collect_garbage(unit_of_work(context), refusing)
        assert collected.refused == {}
        # Asked again now that it is due, by this round or by the service's own (which may get there first).
        assert any(held["id"] in key for key in refusing.asked[asked_before:])
        assert await real.read(f"images/{held['id']}/thumb.webp", limit=10**8) is None
        async with (uow := unit_of_work(context)):
            done = await uow.images.get_for_update(held["id"])
            assert done is not None and done.garbage == () and done.garbage_retry_at is None
    finally:
        context.extras[STORAGE] = real


async def test_an_upload_whose_attempts_all_crashed_is_rejected_not_tried_forever(api: Any, pictures: Any) -> None:
    # Attempts that end without an outcome (the process died, or something unforeseen was raised) leave the image
    # processing with its claim run out; after MAX_ATTEMPTS of them the next claim gives up instead of a sixth try.
    context = api.running.process.host("images").context
    ann = await api.person()
    data = pictures.jpeg()
    slot = await api.slot(ann, data)
    assert (await api.send(slot["upload"], data)).status_code in (200, 201, 204)
    async with (uow := unit_of_work(context)):
        image = await uow.images.get_for_update(slot["image_id"])
        assert image is not None
        crashed = replace(
            image,
            status=Status.PROCESSING,
            attempts=MAX_ATTEMPTS,
            claimed_until=uow.clock.now() - timedelta(seconds=1),
        )
        await uow.images.save(crashed)
    wake_processing(context)
    outcome = await api.outcome(ann, slot["image_id"], timeout=30)
    assert outcome["status"] == "rejected", outcome
    assert outcome["reason"] == f"could not be processed after {MAX_ATTEMPTS} attempts"
    await api.running.settle()
    records = await api.running.process.platform.log.read("image", limit=100_000)
    types = [e.type for e in map(Envelope.from_record, records) if e.aggregate_id == slot["image_id"]]
    assert types == ["image.rejected"]


async def test_an_attempt_that_lost_its_claim_leaves_the_newer_attempts_variants_alone(api: Any) -> None:
    # An attempt slower than its claim (CLAIM_SECONDS) finishes while a newer attempt (another process) holds the
    # image: both write the same variant keys, so the late one must not list them as garbage.
    context = api.running.process.host("images").context
    ann = await api.person()
    slot = await api.slot(ann, b"x")
    now = context.clock.now()
    async with (uow := unit_of_work(context)):
        image = await uow.images.get_for_update(slot["image_id"])
        assert image is not None
        late = replace(image, status=Status.PROCESSING, attempts=1, claimed_until=now - timedelta(seconds=1))
        newer = replace(late, attempts=2, claimed_until=now + timedelta(hours=1))  # the polling task keeps off it
        await uow.images.save(newer)
    keys = {variant: variant_key(image.id, variant) for variant in Variant}
    storage = context.extras[STORAGE]
    await service._make_ready(
        unit_of_work(context), late, keys, (8, 8), storage, urls=service.UrlPolicy(60, frozenset())
    )
    await service._make_ready(
        unit_of_work(context), newer, keys, (8, 8), storage, urls=service.UrlPolicy(60, frozenset())
    )
    async with (uow := unit_of_work(context)):
        ready = await uow.images.get(image.id)
    assert ready is not None and ready.status is Status.READY
    assert not set(keys.values()) & set(ready.garbage), ready.garbage
