"""The images service's step of the account-deletion saga: on user.deleted every image of the person (each purpose,
ready or still awaiting its upload) is deleted and announced, its objects are deleted by the tidy task, and the
reply (user_deletion.step_done) commits with the records marked deleted; nothing of anyone else is touched."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gatherly.contracts.users import UserDeleted
from gatherly.images.store import ImageStore
from gatherly.images.tables import images
from gatherly.kernel.messages import Envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.ImagesApi: one whole Gatherly per module, database backend and storage backend.


async def _deliver(api: Any, event: UserDeleted) -> None:
    await api.running.process.platform.log.publish([Envelope.wrap(event, datetime.now(UTC)).to_message()])
    await api.running.settle()


async def _read(api: Any, topic: str) -> list[Envelope]:
    await api.running.settle()
    return [Envelope.from_record(r) for r in await api.running.process.platform.log.read(topic, limit=100_000)]


async def _replies(api: Any, user_id: str) -> list[dict[str, Any]]:
    return [
        e.payload
        for e in await _read(api, "user_deletion")
        if e.aggregate_id == user_id and e.payload["service"] == "images"
    ]


async def _statuses(api: Any, owner: str) -> dict[str, str]:
    async with api.running.process.host("images").context.db.read_session() as session:
        rows = await session.execute(select(images.c.id, images.c.status).where(images.c.owner_id == owner))
    return {row.id: row.status for row in rows}


async def _exists(api: Any, key: str) -> bool:
    storage = api.running.process.host("images").context.extras["storage"]
    return await storage.read(key, limit=50 * 1024 * 1024) is not None


async def _until_gone(api: Any, keys: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while [key for key in keys if await _exists(api, key)]:
        assert time.monotonic() < deadline, f"still stored: {[k for k in keys if await _exists(api, k)]}"
        await asyncio.sleep(0.05)


async def test_a_deletion_deletes_every_image_of_the_person_and_replies_with_what_went(api: Any, pictures: Any) -> None:
    ann, bob = await api.person(), await api.person()
    avatar = await api.upload(ann, pictures.png(), "image/png", purpose="avatar")
    cover = await api.upload(ann, pictures.jpeg(), purpose="event_cover")
    banner_slot = await api.slot(ann, pictures.jpeg(), purpose="group_banner")  # never uploaded
    bobs = await api.upload(bob, pictures.jpeg(), purpose="avatar")
    assert avatar["status"] == cover["status"] == bobs["status"] == "ready"

    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=datetime.now(UTC), deletion_id="deletion-1"))

    ann_images = [avatar["id"], cover["id"], banner_slot["image_id"]]
    assert await _statuses(api, ann.user_id) == dict.fromkeys(ann_images, "deleted")
    announced = [e.aggregate_id for e in await _read(api, "image") if e.type == "image.deleted"]
    assert sorted(i for i in announced if i in ann_images) == sorted(ann_images)
    [reply] = await _replies(api, ann.user_id)
    assert reply["deletion_id"] == "deletion-1"
    assert reply["what"] == {"avatar": 1, "event_cover": 1, "group_banner": 1}
    # The objects go with the tidy task's next round (the reply went when the records were marked deleted).
    await _until_gone(
        api,
        [
            f"images/{image_id}/{v}.webp"
            for image_id in (avatar["id"], cover["id"])
            for v in ("thumb", "medium", "large")
        ],
    )

    # Bob's image is untouched: still ready, still served.
    assert await _statuses(api, bob.user_id) == {bobs["id"]: "ready"}
    assert bobs["id"] not in announced
    assert await _exists(api, f"images/{bobs['id']}/large.webp")
    assert (await api.fetch(bobs["variants"]["thumb"])).status_code == 200


async def test_a_repeated_deletion_replies_again_and_one_without_a_saga_replies_to_nobody(
    api: Any, pictures: Any
) -> None:
    ann, cat = await api.person(), await api.person()
    await api.upload(ann, pictures.jpeg())
    now = datetime.now(UTC)
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=now, deletion_id="first"))
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=now, deletion_id="second"))
    assert [(r["deletion_id"], r["what"]) for r in await _replies(api, ann.user_id)] == [
        ("first", {"event_photo": 1}),
        ("second", {}),
    ]

    cats = await api.upload(cat, pictures.jpeg())
    await _deliver(api, UserDeleted(user_id=cat.user_id, deleted_at=now))
    assert await _statuses(api, cat.user_id) == {cats["id"]: "deleted"}
    assert await _replies(api, cat.user_id) == []


async def test_a_database_error_during_the_deletion_is_retried_not_parked(
    api: Any, pictures: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = await api.person()
    image = await api.upload(ann, pictures.jpeg())
    owned_by = ImageStore.owned_by
    calls: list[str] = []

    async def failing_once(self: ImageStore, owner: str) -> Any:
        calls.append(owner)
        if len(calls) == 1:
            raise OperationalError("SELECT FROM images", {}, Exception("the database went away"))
        return await owned_by(self, owner)

    monkeypatch.setattr(ImageStore, "owned_by", failing_once)
    parked_before = len(await _read(api, "user.dlq"))
    await _deliver(api, UserDeleted(user_id=ann.user_id, deleted_at=datetime.now(UTC), deletion_id="retried"))
    assert len(calls) >= 2
    assert await _statuses(api, ann.user_id) == {image["id"]: "deleted"}
    assert [r["deletion_id"] for r in await _replies(api, ann.user_id)] == ["retried"]
    assert len(await _read(api, "user.dlq")) == parked_before
